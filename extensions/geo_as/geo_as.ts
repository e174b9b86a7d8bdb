// geo_as: the geo example's great-circle functions written in AssemblyScript,
// to show the AssemblyScript SDK (docs/sdk-assemblyscript.md) and to measure
// it beside the C module (benchmarks/assemblyscript.py). Same conventions as
// geo: degrees, kilometres, a spherical Earth of mean radius 6371.0088 km.

import { Args, Handles, OK, readArgs, returnError, returnNil, returnReal, returnText } from "sqlwasm";

export { sqlwasm_alloc } from "sqlwasm";

const EARTH_RADIUS_KM: f64 = 6371.0088;
const RADIANS: f64 = Math.PI / 180.0;

// geo_as_haversine(lat1, lon1, lat2, lon2) -> km (raw ABI: f64s in, f64 out).
export function haversine(lat1: f64, lon1: f64, lat2: f64, lon2: f64): f64 {
  const sinHalfDlat = Math.sin((lat2 - lat1) * RADIANS / 2.0);
  const sinHalfDlon = Math.sin((lon2 - lon1) * RADIANS / 2.0);
  let h = sinHalfDlat * sinHalfDlat + Math.cos(lat1 * RADIANS) * Math.cos(lat2 * RADIANS) * sinHalfDlon * sinHalfDlon;
  if (h > 1.0) h = 1.0; // rounding near the antipode
  return 2.0 * EARTH_RADIUS_KM * Math.atan2(Math.sqrt(h), Math.sqrt(1.0 - h));
}

// geo_as_path_km(points) -> km (msgpack): the length of the path through the
// points of a blob of little-endian f64 pairs (lat, lon), in order.
export function path_km(ptr: usize, len: i32): i64 {
  const args = readArgs(ptr, len, 1);
  const points = args.nextBlobUnsafe();
  if (args.failed) return args.error();
  const size = args.length;
  if (size % 16 != 0) return returnError(`points: ${size} bytes is not a whole number of (lat, lon) pairs of reals`);
  let total: f64 = 0.0;
  for (let at: i32 = 16; at < size; at += 16) {
    const p = points + <usize>at;
    total += haversine(load<f64>(p - 16), load<f64>(p - 8), load<f64>(p), load<f64>(p + 8));
  }
  return returnReal(total);
}

// geo_as_centroid(lat, lon) -> "[lat,lon]" (msgpack window aggregate): the
// direction of the sum of the points' unit vectors, i.e. the spherical mean.
// NULL for no rows, or when the vectors cancel out (antipodal points).
class Centroid {
  x: f64 = 0.0;
  y: f64 = 0.0;
  z: f64 = 0.0;
}

const centroids = new Handles<Centroid>();

export function centroid_init(): i32 {
  return centroids.add(new Centroid());
}

// Adds (sign 1) or removes (sign -1) the row's point.
function accumulate(state: Centroid, args: Args, sign: f64): i64 {
  const lat = args.nextReal() * RADIANS;
  const lon = args.nextReal() * RADIANS;
  if (args.failed) return args.error();
  const cosLat = Math.cos(lat);
  state.x += sign * cosLat * Math.cos(lon);
  state.y += sign * cosLat * Math.sin(lon);
  state.z += sign * Math.sin(lat);
  return OK;
}

export function centroid_step(handle: i32, ptr: usize, len: i32): i64 {
  return accumulate(centroids.get(handle), readArgs(ptr, len, 2), 1.0);
}

export function centroid_inverse(handle: i32, ptr: usize, len: i32): i64 {
  return accumulate(centroids.get(handle), readArgs(ptr, len, 2), -1.0);
}

export function centroid_value(handle: i32): i64 {
  const state = centroids.get(handle);
  const horizontal = Math.hypot(state.x, state.y);
  if (Math.hypot(horizontal, state.z) < 1e-9) return returnNil();
  const lat = Math.atan2(state.z, horizontal) / RADIANS;
  const lon = Math.atan2(state.y, state.x) / RADIANS;
  return returnText(`[${lat},${lon}]`);
}

export function centroid_final(handle: i32): i64 {
  const result = centroid_value(handle);
  centroids.release(handle);
  return result;
}

export function centroid_drop(handle: i32): void {
  centroids.release(handle);
}
