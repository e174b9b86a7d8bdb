"""sqlwasm's exception tree: everything it raises derives from Error."""

import errno
import os


class Error(Exception):
    """Base class of every sqlwasm error."""


class ManifestError(Error):
    """A module's manifest is missing, malformed, or does not match its exports."""


class SignatureError(Error):
    """A module is unsigned, tampered with, or signed by a key that is not trusted."""


class CapabilityError(Error):
    """A module imports or needs something it did not declare or was not granted."""


class MarshallingError(Error):
    """A value could not cross the host/guest boundary."""


class TrapError(Error):
    """A guest trapped (unreachable, out of bounds, out of fuel, time limit...)."""


class ModuleFileNotFoundError(Error, FileNotFoundError):
    """A module file that does not exist: a sqlwasm Error and a FileNotFoundError."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ENOENT, os.strerror(errno.ENOENT), path)

    def __str__(self) -> str:
        return f"cannot read module {self.filename}: {self.strerror}"
