// sqlwasm guest SDK for AssemblyScript: the msgpack ABI, the argument
// buffer the host writes rows into, and handles for aggregate states.
// The contract it implements is docs/abi.md; docs/sdk-assemblyscript.md
// shows how to use it. `sqlwasm build funcs.ts` puts this directory on the
// compiler's package path, so a module says:
//
//   import { readArgs, returnReal } from "sqlwasm";
//   export { sqlwasm_alloc } from "sqlwasm";   // msgpack modules only
//
// Raw functions (numbers in, one number out) need nothing from here: an
// exported `function f(a: f64, b: i64): f64` already is one.
//
// Nothing here imports from the host. Every read is bounds-checked against
// the row the host wrote; a malformed row is an error result, never a trap.

// ---------------------------------------------------------------- memory

// The argument buffer: the host asks for it with sqlwasm_alloc and keeps
// writing rows into it until it asks again, so it is kept apart from
// everything else (unmanaged memory, never touched by the GC).
let argsBuffer: usize = 0;
let argsCapacity: usize = 0;

/** Exported by every msgpack module (`export { sqlwasm_alloc } from "sqlwasm"`):
 * a buffer of at least len bytes for the host's argument rows, 0 if len is
 * negative. It stays put until the next call, which may replace it. */
export function sqlwasm_alloc(len: i32): usize {
  if (len < 0) return 0;
  const want = <usize>max(len, 1);
  if (want > argsCapacity) {
    if (argsBuffer) heap.free(argsBuffer);
    argsBuffer = heap.alloc(want);
    argsCapacity = want;
  }
  return argsBuffer;
}

// ---------------------------------------------------------------- reading

/** The type of the next msgpack value (Reader.peek). */
export const enum Type {
  End = 0, // no more input, or the reader failed
  Nil,
  Bool,
  Int,
  Float,
  Str,
  Bin,
  Array,
  Map,
  Other, // ext types and the unused byte 0xc1
}

/** A name for messages: "real", "text", ... */
export function typeName(type: Type): string {
  switch (type) {
    case Type.Nil: return "null";
    case Type.Bool: return "boolean";
    case Type.Int: return "integer";
    case Type.Float: return "real";
    case Type.Str: return "text";
    case Type.Bin: return "blob";
    case Type.Array: return "array";
    case Type.Map: return "map";
    case Type.Other: return "extension value";
    default: return "nothing";
  }
}

function typeOf(tag: u8): Type {
  if (tag <= 0x7f || tag >= 0xe0) return Type.Int;
  if (tag <= 0x8f) return Type.Map;
  if (tag <= 0x9f) return Type.Array;
  if (tag <= 0xbf) return Type.Str;
  switch (tag) {
    case 0xc0: return Type.Nil;
    case 0xc2: case 0xc3: return Type.Bool;
    case 0xc4: case 0xc5: case 0xc6: return Type.Bin;
    case 0xca: case 0xcb: return Type.Float;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: return Type.Int;
    case 0xd9: case 0xda: case 0xdb: return Type.Str;
    case 0xdc: case 0xdd: return Type.Array;
    case 0xde: case 0xdf: return Type.Map;
    default: return Type.Other;
  }
}

/** A bounds-checked msgpack reader over guest memory. After any failure
 * (truncated input, a value of the wrong type, an unsigned integer above
 * 2^63 - 1) `failed` is set, `message` says why, and later reads return
 * 0 / "" / null without moving: check `failed` once, after reading. A read
 * of the wrong type consumes nothing. */
export class Reader {
  pos: usize = 0;
  end: usize = 0;
  failed: bool = false;
  message: string = "";
  /** Bytes of the last str or bin read (textUnsafe, blobUnsafe). */
  length: i32 = 0;
  /** 1-based number of the value being read, for messages; 0: none. */
  argument: i32 = 0;

  reset(ptr: usize, len: usize): this {
    this.pos = ptr;
    this.end = ptr + len;
    this.failed = false;
    this.message = "";
    this.length = 0;
    this.argument = 0;
    return this;
  }

  /** True when every byte was read and nothing failed. */
  done(): bool {
    return !this.failed && this.pos == this.end;
  }

  peek(): Type {
    if (this.failed || this.pos >= this.end) return Type.End;
    return typeOf(load<u8>(this.pos));
  }

  fail(message: string): void {
    if (!this.failed) {
      this.failed = true;
      this.message = message;
    }
  }

  private wrongType(expected: string): void {
    const got = typeName(this.peek());
    if (this.argument > 0) this.fail(`argument ${this.argument} must be ${expected}, got ${got}`);
    else this.fail(`expected ${expected}, got ${got}`);
  }

  private has(n: usize): bool {
    if (this.end - this.pos >= n) return true;
    this.fail("truncated msgpack input");
    return false;
  }

  // A big-endian unsigned integer of `bytes` bytes at pos + 1 (after the tag).
  private be(bytes: i32): u64 {
    const p = this.pos + 1;
    switch (bytes) {
      case 1: return <u64>load<u8>(p);
      case 2: return <u64>bswap<u16>(load<u16>(p));
      case 4: return <u64>bswap<u32>(load<u32>(p));
      default: return bswap<u64>(load<u64>(p));
    }
  }

  /** nil: consumes it and returns true; anything else: false, nothing consumed. */
  nil(): bool {
    if (this.peek() != Type.Nil) return false;
    this.pos += 1;
    return true;
  }

  bool(): bool {
    if (this.peek() != Type.Bool) {
      this.wrongType("boolean");
      return false;
    }
    const value = load<u8>(this.pos) == 0xc3;
    this.pos += 1;
    return value;
  }

  /** An integer; a real with an integral value in the int64 range is accepted. */
  int(): i64 {
    const type = this.peek();
    if (type == Type.Float) {
      const start = this.pos;
      const value = this.real();
      if (!this.failed && value == Math.trunc(value) && value >= -9223372036854775808.0 &&
          value < 9223372036854775808.0) return <i64>value;
      this.pos = start; // a wrong-type read consumes nothing
      this.wrongType("integer");
      return 0;
    }
    if (type != Type.Int) {
      this.wrongType("integer");
      return 0;
    }
    const tag = load<u8>(this.pos);
    if (tag <= 0x7f || tag >= 0xe0) {
      this.pos += 1;
      return <i64><i8>tag;
    }
    const bytes = 1 << (tag & 3);
    if (!this.has(1 + bytes)) return 0;
    const raw = this.be(bytes);
    if (tag >= 0xd0) { // signed: sign-extend from `bytes` bytes
      const shift = <u64>(64 - 8 * bytes);
      this.pos += 1 + bytes;
      return (<i64>(raw << shift)) >> shift;
    }
    if (raw > <u64>i64.MAX_VALUE) {
      this.fail(`integer ${raw} is out of range`);
      return 0;
    }
    this.pos += 1 + bytes;
    return <i64>raw;
  }

  /** A real; an integer is accepted (converted). */
  real(): f64 {
    const type = this.peek();
    if (type == Type.Int) return <f64>this.int();
    if (type != Type.Float) {
      this.wrongType("real");
      return 0;
    }
    const tag = load<u8>(this.pos);
    if (tag == 0xca) {
      if (!this.has(5)) return 0;
      const value = <f64>reinterpret<f32>(<u32>this.be(4));
      this.pos += 5;
      return value;
    }
    if (!this.has(9)) return 0;
    const value = reinterpret<f64>(this.be(8));
    this.pos += 9;
    return value;
  }

  // The payload of a str or bin header at pos: sets length, returns a pointer.
  private payload(): usize {
    const tag = load<u8>(this.pos);
    let header: i32 = 1;
    let size: u64;
    if ((tag & 0xe0) == 0xa0) size = <u64>(tag & 0x1f);
    else {
      const bytes = tag >= 0xd9 ? 1 << (tag - 0xd9) : 1 << (tag - 0xc4);
      if (!this.has(1 + bytes)) return 0;
      size = this.be(bytes);
      header += bytes;
    }
    if (<u64>header + size > <u64>(this.end - this.pos)) { // in u64: no wrap-around
      this.fail("truncated msgpack input");
      return 0;
    }
    const start = this.pos + header;
    this.pos = start + <usize>size;
    this.length = <i32>size;
    return start;
  }

  /** Text as a pointer to its UTF-8 bytes in the row (no copy); the byte
   * count is in `length`. Valid until the export returns. */
  textUnsafe(): usize {
    if (this.peek() != Type.Str) {
      this.wrongType("text");
      return 0;
    }
    return this.payload();
  }

  /** Text as a string (decoded from UTF-8: allocates). */
  text(): string {
    const ptr = this.textUnsafe();
    if (this.failed) return "";
    return String.UTF8.decodeUnsafe(ptr, <usize>this.length);
  }

  /** A blob as a pointer to its bytes in the row (no copy); the byte count
   * is in `length`. Text is not accepted. Valid until the export returns. */
  blobUnsafe(): usize {
    if (this.peek() != Type.Bin) {
      this.wrongType("blob");
      return 0;
    }
    return this.payload();
  }

  /** A blob, copied into a new ArrayBuffer. */
  blob(): ArrayBuffer {
    const ptr = this.blobUnsafe();
    const copy = new ArrayBuffer(this.failed ? 0 : this.length);
    if (!this.failed) memory.copy(changetype<usize>(copy), ptr, <usize>this.length);
    return copy;
  }

  /** An array header: the number of elements that follow. */
  array(): i32 {
    const type = this.peek();
    if (type != Type.Array) {
      this.wrongType("array");
      return 0;
    }
    const tag = load<u8>(this.pos);
    if (tag <= 0x9f) {
      this.pos += 1;
      return <i32>(tag & 0x0f);
    }
    const bytes = tag == 0xdc ? 2 : 4;
    if (!this.has(1 + bytes)) return 0;
    const count = this.be(bytes);
    if (count > <u64>i32.MAX_VALUE) {
      this.fail("array too long");
      return 0;
    }
    this.pos += 1 + bytes;
    return <i32>count;
  }

  /** Skips one value of any type the host sends (nil, bool, int, float, str, bin). */
  skip(): void {
    switch (this.peek()) {
      case Type.Nil: case Type.Bool: this.pos += 1; break;
      case Type.Int: this.int(); break;
      case Type.Float: this.real(); break;
      case Type.Str: case Type.Bin: this.payload(); break;
      case Type.End: this.fail("truncated msgpack input"); break;
      default: this.fail(`cannot skip ${typeName(this.peek())}`);
    }
  }
}

/** The arguments of one call: a Reader positioned on the row's first value. */
export class Args extends Reader {
  /** How many arguments the row holds. */
  count: i32 = 0;
  private next: i32 = 0;

  /** Moves to the next argument (numbering it for messages). */
  private advance(): void {
    this.next += 1;
    this.argument = this.next;
  }

  /** True, and the argument consumed, if the next argument is NULL (nil);
   * otherwise false and nothing moves, so it can guard another read. */
  nextNil(): bool {
    if (this.peek() != Type.Nil) return false;
    this.advance();
    return this.nil();
  }
  nextInt(): i64 { this.advance(); return this.int(); }
  nextReal(): f64 { this.advance(); return this.real(); }
  nextText(): string { this.advance(); return this.text(); }
  nextTextUnsafe(): usize { this.advance(); return this.textUnsafe(); }
  nextBlob(): ArrayBuffer { this.advance(); return this.blob(); }
  nextBlobUnsafe(): usize { this.advance(); return this.blobUnsafe(); }
  /** Skips one argument whatever its type. */
  nextSkip(): void { this.advance(); this.skip(); }

  /** The result to return when the row could not be read: {"error": message}. */
  error(): i64 {
    return returnError(this.message);
  }

  start(ptr: usize, len: usize, expected: i32): Args {
    this.reset(ptr, len);
    this.next = 0;
    this.count = this.array();
    if (!this.failed && expected >= 0 && this.count != expected) {
      this.fail(`expected ${expected} argument${expected == 1 ? "" : "s"}, got ${this.count}`);
    }
    return this;
  }
}

const ARGS = new Args();

/** Starts reading the argument row (ptr, len) the host passed an export,
 * which must hold `expected` arguments (-1: any number, for varargs). Read
 * them in order with nextReal(), nextInt(), nextText(), ...; then, if
 * `failed`, return `error()`. One Args object serves every call. */
export function readArgs(ptr: usize, len: i32, expected: i32 = -1): Args {
  return ARGS.start(ptr, <usize>len, expected);
}

// ---------------------------------------------------------------- writing

// Results are written into one unmanaged buffer, reused by every call: the
// host copies a result out before it calls the module again.
let out: usize = 0;
let outCapacity: usize = 0;
let outLength: usize = 0;

function reserve(n: usize): usize {
  const need = outLength + n;
  if (need > outCapacity) {
    let capacity = max<usize>(outCapacity * 2, 256);
    while (capacity < need) capacity *= 2;
    out = out ? heap.realloc(out, capacity) : heap.alloc(capacity);
    outCapacity = capacity;
  }
  const at = out + outLength;
  outLength = need;
  return at;
}

function putBE(at: usize, value: u64, bytes: i32): void {
  switch (bytes) {
    case 1: store<u8>(at, <u8>value); break;
    case 2: store<u16>(at, bswap<u16>(<u16>value)); break;
    case 4: store<u32>(at, bswap<u32>(<u32>value)); break;
    default: store<u64>(at, bswap<u64>(value));
  }
}

function header(size: usize, tag8: u8, tag16: u8, tag32: u8): void {
  if (size <= 0xff && tag8) {
    const at = reserve(2);
    store<u8>(at, tag8);
    store<u8>(at, <u8>size, 1);
  } else if (size <= 0xffff) {
    const at = reserve(3);
    store<u8>(at, tag16);
    putBE(at + 1, <u64>size, 2);
  } else {
    const at = reserve(5);
    store<u8>(at, tag32);
    putBE(at + 1, <u64>size, 4);
  }
}

/** Builds one msgpack value in the result buffer. The return* functions
 * below cover scalars; use Writer directly for an error with several
 * parts or to write a value piece by piece. */
export namespace Writer {
  /** Starts a new result (the previous one is gone). */
  export function begin(): void {
    outLength = 0;
  }

  /** The result to return from the export: (ptr << 32) | len. */
  export function finish(): i64 {
    return <i64>((<u64>out << 32) | <u64>outLength);
  }

  export function nil(): void {
    store<u8>(reserve(1), 0xc0);
  }

  export function bool(value: bool): void {
    store<u8>(reserve(1), value ? 0xc3 : 0xc2);
  }

  export function int(value: i64): void {
    if (value >= -32 && value <= 127) {
      store<u8>(reserve(1), <u8>value);
    } else {
      const at = reserve(9);
      store<u8>(at, 0xd3);
      putBE(at + 1, <u64>value, 8);
    }
  }

  export function real(value: f64): void {
    const at = reserve(9);
    store<u8>(at, 0xcb);
    putBE(at + 1, reinterpret<u64>(value), 8);
  }

  /** UTF-8 bytes at ptr as a str (they must be valid UTF-8: the host checks). */
  export function textUtf8(ptr: usize, len: usize): void {
    if (len < 32) store<u8>(reserve(1), <u8>(0xa0 | len));
    else header(len, 0xd9, 0xda, 0xdb);
    memory.copy(reserve(len), ptr, len);
  }

  /** A string as a str, unpaired surrogates replaced by U+FFFD. */
  export function text(value: string): void {
    const len = <usize>String.UTF8.byteLength(value);
    if (len < 32) store<u8>(reserve(1), <u8>(0xa0 | len));
    else header(len, 0xd9, 0xda, 0xdb);
    String.UTF8.encodeUnsafe(changetype<usize>(value), value.length, reserve(len), false,
      String.UTF8.ErrorMode.REPLACE);
  }

  export function blob(ptr: usize, len: usize): void {
    header(len, 0xc4, 0xc5, 0xc6);
    memory.copy(reserve(len), ptr, len);
  }

  /** An array header (for a table function's rows): count values follow. */
  export function array(count: u32): void {
    if (count < 16) store<u8>(reserve(1), <u8>(0x90 | count));
    else header(count, 0, 0xdc, 0xdd);
  }

  /** The map {"error": message}: the SQL call fails with message. */
  export function error(message: string): void {
    const at = reserve(7);
    store<u8>(at, 0x81);
    store<u8>(at, 0xa5, 1);
    store<u32>(at, 0x6f727265, 2); // "erro", little-endian
    store<u8>(at, 0x72, 6); // "r"
    text(message);
  }
}

export function returnNil(): i64 { Writer.begin(); Writer.nil(); return Writer.finish(); }
export function returnBool(value: bool): i64 { Writer.begin(); Writer.bool(value); return Writer.finish(); }
export function returnInt(value: i64): i64 { Writer.begin(); Writer.int(value); return Writer.finish(); }
export function returnReal(value: f64): i64 { Writer.begin(); Writer.real(value); return Writer.finish(); }
export function returnText(value: string): i64 { Writer.begin(); Writer.text(value); return Writer.finish(); }
export function returnBlob(ptr: usize, len: usize): i64 {
  Writer.begin();
  Writer.blob(ptr, len);
  return Writer.finish();
}
export function returnBytes(value: ArrayBuffer): i64 {
  return returnBlob(changetype<usize>(value), <usize>value.byteLength);
}
/** Fails the SQL call with `module.function: message`. */
export function returnError(message: string): i64 {
  Writer.begin();
  Writer.error(message);
  return Writer.finish();
}

/** What a msgpack step or inverse returns when it succeeded. */
export const OK: i64 = 0;

// ---------------------------------------------------------------- states

/** Aggregate states behind i32 handles: init returns add(new State()),
 * step and value use get(handle), final and drop use release(handle).
 * A handle that is not live traps (the host never passes one). Freed
 * handles are reused. */
export class Handles<T> {
  private items: Array<T | null> = [];
  private spare: Array<i32> = [];

  add(state: T): i32 {
    if (this.spare.length > 0) {
      const handle = this.spare.pop();
      this.items[handle] = state;
      return handle;
    }
    this.items.push(state);
    return this.items.length - 1;
  }

  get(handle: i32): T {
    const state = this.items[handle]; // out of range traps
    if (state === null) unreachable();
    return changetype<T>(state);
  }

  release(handle: i32): T {
    const state = this.get(handle);
    this.items[handle] = null;
    this.spare.push(handle);
    return state;
  }

  /** How many states are live (for tests). */
  get live(): i32 {
    return this.items.length - this.spare.length;
  }
}
