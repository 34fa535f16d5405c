"""Convert the refer API's ``refs(<split_by>).p`` pickles to JSON, without running any code from them.

The refCLEF/refCOCO* referring expressions ship only as Python pickles (lichengunc/refer), now served
from third-party mirrors because the original host is gone. Unpickling can call any importable
function, so a tampered file would run code in every process that loads it (train_datasets.md §4).
The refs are plain lists, dicts, strings and ints, which unpickle without looking up a single global,
so this module:

1. scans the opcodes first and refuses any that imports or calls something (a clear error that names
   the opcode and its byte offset), then
2. unpickles with :class:`DataOnlyUnpickler`, whose ``find_class`` refuses every global — the check
   that actually guarantees nothing is imported, even if the scan missed a path, and
3. writes the result as JSON; sources read only the JSON afterwards.

The project reads no pickle but this one: nothing else may call ``pickle.load``.

The refs were pickled by Python 2, whose byte strings arrive as ``bytes`` when unpickled with
``encoding="bytes"``; they are decoded as UTF-8 here (never silently as latin-1, which would turn any
other encoding into mojibake without an error).
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
from pathlib import Path
from typing import Any, NoReturn

from lavida.atomic import write_json
from lavida.data.sources.base import DatasetFormatError

__all__ = ["DataOnlyUnpickler", "RefusedPickleError", "convert_refs_pickle", "load_data_pickle"]

logger = logging.getLogger(__name__)

# Opcodes that import a global, call it, or hand control to a hook (persistent ids, the copyreg
# extension registry). Data-only pickles (containers, str/bytes, numbers, None/bools) never use them.
_CODE_OPCODES = frozenset(
    {
        "GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX",
        "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID",
    }
)  # fmt: skip


class RefusedPickleError(pickle.UnpicklingError):
    """The pickle asks for a global or a persistent id: content refused, unlike a corrupt stream."""


class DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler that loads only built-in data: every global and persistent id is refused.

    ``find_class`` is the single door through which a pickle obtains a callable (GLOBAL,
    STACK_GLOBAL, INST, and the extension registry all go through it), so refusing it makes REDUCE,
    OBJ and friends inert.
    """

    def find_class(self, module: str, name: str) -> NoReturn:
        raise RefusedPickleError(
            f"refused global '{module}.{name}': this pickle would import code; only plain data "
            "(lists, dicts, strings, numbers) is accepted."
        )

    def persistent_load(self, pid: Any) -> NoReturn:
        raise RefusedPickleError(f"refused persistent id {pid!r}: only plain data is accepted.")


def load_data_pickle(data: bytes, *, name: str = "<pickle>") -> Any:
    """Unpickle plain data (no globals) and return it with Python-2 byte strings decoded as UTF-8.

    Args:
        data: The pickle's bytes.
        name: What to call the pickle in error messages (usually its path).

    Returns:
        The unpickled object: nested lists/dicts of str, int, float, bool and None (tuples and sets
        become lists, dict keys become str), ready for ``json.dumps``.

    Raises:
        DatasetFormatError: The pickle references code (the opcode is named), is corrupt or
            truncated, or holds bytes that are not UTF-8.
    """
    # The refusal is raised after the scan, outside its try: DatasetFormatError is a ValueError, which the
    # corrupt-stream handler below caught and reworded as a truncated file.
    code = None
    try:
        for opcode, _argument, position in pickletools.genops(data):
            if opcode.name in _CODE_OPCODES:
                code = opcode.name, position
                break
    except (ValueError, EOFError) as error:  # genops raises ValueError on a corrupt stream
        raise _corrupt(name, error) from error
    if code is not None:
        raise DatasetFormatError(
            f"{name}: refused: opcode {code[0]} at byte {code[1]} imports or calls code. "
            "The refer pickles hold only plain data, so this file is not a genuine one; "
            "download it again from a trusted copy."
        )
    try:
        # encoding="bytes": Python-2 str arrives as bytes, decoded below as UTF-8 (module docstring).
        loaded = DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedPickleError as error:
        raise DatasetFormatError(f"{name}: {error}") from error
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
    ) as error:
        raise _corrupt(name, error) from error
    try:
        return _plain(loaded, name)
    except RecursionError as error:  # a self-containing list: not refs, and not expressible in JSON
        raise DatasetFormatError(f"{name}: the pickle holds a self-referencing structure.") from error


def _corrupt(name: str, error: Exception) -> DatasetFormatError:
    """The refusal of a pickle that cannot be read to its end (as opposed to one that holds code)."""
    return DatasetFormatError(
        f"{name}: not a valid pickle ({error!r}); the file is truncated or corrupt. Download it again."
    )


def _plain(value: Any, name: str) -> Any:
    """Recursively turn unpickled data into JSON-ready values (bytes -> UTF-8 str, tuples -> lists)."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise DatasetFormatError(
                f"{name}: a string is not valid UTF-8 ({error}); convert the file with the encoding it "
                "was written in before using it."
            ) from error
    if isinstance(value, dict):
        return {str(_plain(key, name)): _plain(item, name) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item, name) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    # Unreachable without a global (complex() needs one), but fail closed rather than emit bad JSON.
    raise DatasetFormatError(f"{name}: unexpected {type(value).__name__} value in a data-only pickle.")


def convert_refs_pickle(path: str | Path, *, output: str | Path | None = None) -> Path:
    """Convert a refer ``refs(<split_by>).p`` pickle to JSON once, safely; return the JSON's path.

    The JSON holds the same list of refs (``ref_id``, ``ann_id``, ``image_id``, ``split``,
    ``sentences``, ...), so ``json.load`` of it equals what the refer API's ``pickle.load`` returned.
    The file is written atomically (a temporary file renamed into place).

    Args:
        path: The pickle, e.g. ``refer_seg/refcoco/refs(unc).p``.
        output: Where to write the JSON (default: next to the pickle, ``refs(unc).json``).

    Returns:
        The path of the JSON file.

    Raises:
        DatasetFormatError: The pickle is missing, corrupt, references code, or is not a list of
            ref dicts.
    """
    path = Path(path)
    output = Path(output) if output is not None else path.with_suffix(".json")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetFormatError(f"{path}: cannot read the refs pickle ({error}).") from error
    refs = load_data_pickle(data, name=str(path))
    if not isinstance(refs, list) or not all(isinstance(ref, dict) for ref in refs):
        raise DatasetFormatError(f"{path}: expected a list of ref dicts, got {type(refs).__name__}.")
    write_json(output, refs, ensure_ascii=False)
    logger.info("Converted %s (%d refs) to %s.", path, len(refs), output)
    return output
