"""`python -m bigmodel export --workdir DIR --out FILE.safetensors [--step N] [--dtype bfloat16]`:
a run's parameters as one safetensors file that rebuilds the model without the run directory
(`load_exported`; `pip install -e '.[export]'`). With `--format hf`, `--out` is a Hugging Face
model directory instead, which `transformers` loads without bigmodel (`hf_export` says how).

Tensors are named by their path in the parameter tree, `layers/attention/query/kernel` (layers
stacked on the first axis, as the model scans them). The model settings and the tokenizer are
JSON in the file's own metadata (the safetensors header), not in a sidecar: one file cannot
drift from its config, and any safetensors reader shows them (`safe_open(F, "np").metadata()`).
The settings are the run's `config.model` as written ("auto" dtype and attention included) plus
the vocabulary size: the loader resolves them for the devices it runs on, as a restore does.
A sentencepiece tokenizer travels as its serialized model (base64), a byte-level BPE as its
tokenizer.json text.

--dtype bfloat16 halves the file; `load_exported` casts back to float32 (parameters are always
float32 here), so logits then differ by bf16's rounding of the weights. The default float32
export reproduces the run's logits bit for bit.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from bigmodel import files
from bigmodel.arguments import path_text, positive_int
from bigmodel.config import ConfigError
from bigmodel.exit_codes import StorageFailed

EXPORT_HELP = "write a run's parameters, model settings and tokenizer to one safetensors file"
FORMAT = "bigmodel-export-1"
SEPARATOR = "/"


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=path_text, required=True, help="a train run's directory")
    parser.add_argument("--out", type=path_text, required=True, help="the .safetensors file to write, or with --format hf the directory (never replaced unless --force)")
    parser.add_argument("--format", choices=("bigmodel", "hf"), default="bigmodel",
                        help="bigmodel: one safetensors file for load_exported; hf: a Hugging Face directory (config.json, "
                             "model.safetensors, tokenizer) that transformers loads as Llama (mlp=swiglu) or Arcee (mlp=gelu)")
    parser.add_argument("--step", type=positive_int, default=None, help="the checkpoint step (default: the newest readable)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="tensor dtype in the file: bfloat16 halves it, and loads back as float32 rounded to bf16")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise ConfigError(f"{out} is a directory: pass a file name such as {out / 'model.safetensors'}")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists: pass --force to replace it, or another --out")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent} does not exist: create it first, or pass another --out")


def check_out_directory(out: Path, force: bool) -> None:
    """--out of `--format hf`: a new directory, or with --force a model directory to replace
    (one holding config.json: --force never deletes a folder of something else)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file: --format hf writes a directory, pass a new directory name")
    if out.is_dir() and not force:
        raise ConfigError(f"{out} exists: pass --force to replace it, or another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise ConfigError(f"{out} is a folder but not a model directory (no config.json): pass a new or empty --out")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent} does not exist: create it first, or pass another --out")


def describe_tokenizer(tokenizer) -> dict:
    """JSON that rebuilds the tokenizer (`tokenizer_from`)."""
    if tokenizer.name == "bytes":
        return {"kind": "bytes", "vocab_size": tokenizer.vocab_size}
    if tokenizer.name == "bpe":
        return {"kind": "bpe", "vocab_size": tokenizer.vocab_size, "tokenizer_json": tokenizer.to_json()}
    proto = tokenizer.processor.serialized_model_proto()
    return {"kind": "sentencepiece", "vocab_size": tokenizer.vocab_size, "model_base64": base64.b64encode(proto).decode("ascii")}


def tokenizer_from(description: dict):
    from bigmodel.data import ByteTokenizer, SentencePieceTokenizer
    from bigmodel.data.tokenizers import ByteLevelBPETokenizer

    if description["kind"] == "bytes":
        return ByteTokenizer()
    if description["kind"] == "bpe":
        return ByteLevelBPETokenizer(description["tokenizer_json"])
    return SentencePieceTokenizer(base64.b64decode(description["model_base64"]))


def flat_tensors(params, dtype: str) -> dict:
    """{"layers/attention/query/kernel": numpy array} in `dtype`, on the host."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import traverse_util

    flat = traverse_util.flatten_dict(jax.device_get(params), sep=SEPARATOR)
    return {name: np.ascontiguousarray(np.asarray(value).astype(jnp.dtype(dtype))) for name, value in flat.items()}


def metadata(config, tokenizer, workdir: Path, step: int, dtype: str) -> dict[str, str]:
    """The safetensors header's metadata: strings only, so each part is a JSON string."""
    model_settings = {**config.model.to_dict(), "vocab_size": config.data.vocab_size}
    run = {"workdir": str(workdir.resolve()), "step": step, "dtype": dtype, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return {"format": FORMAT, "model": json.dumps(model_settings), "tokenizer": json.dumps(describe_tokenizer(tokenizer)),
            "run": json.dumps(run)}


def write_file(out: Path, write) -> None:
    """write(path) inside a temporary folder beside `out` (safetensors writes its own `.tmpXXXXXX`
    there first), then rename the file onto `out`: a reader never sees half a file, and an export
    killed midway leaves one folder named with its pid, which the next export to `out` removes.
    Out of space or read-only: StorageFailed (exit 74), nothing left."""
    folder = files.temporary_sibling(out)
    try:
        files.remove_stale_temporaries(out)
        folder.mkdir()
        write(folder / out.name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(folder / out.name, 0o666 & ~umask)  # safetensors writes 0600; a model file is made to be shared, like any other
        os.replace(folder / out.name, out)
    except Exception as error:  # noqa: BLE001 — only storage failures are handled; the rest re-raise
        reason = files.storage_failure(error)
        if reason is None:
            raise
        raise StorageFailed(f"writing {out} failed ({reason}); nothing was left there: free space or pick a writable --out") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def export_command(args: argparse.Namespace) -> int:
    """Check the output path and the run (no JAX work), restore, write atomically, report."""
    from bigmodel.restore import open_for_use, restore_params

    out, workdir, is_hf = Path(args.out), Path(args.workdir), args.format == "hf"
    if is_hf:
        check_out_directory(out, args.force)
    else:
        check_out(out, args.force)
    if importlib.util.find_spec("safetensors") is None:
        raise ConfigError("export needs safetensors: pip install -e '.[export]'")
    from safetensors.numpy import save_file

    config, manager, tokenizer = open_for_use(workdir)
    if is_hf:
        from bigmodel.inference import hf_export
        from bigmodel.model_config import model_config

        model = model_config(config, platform="cpu")  # shapes only: dtype and attention do not matter here
        try:
            hf_export.check_exportable(model, tokenizer.name)
        except ConfigError:
            manager.close()
            raise
    setup, params, step = restore_params(config, manager, args.step)
    if is_hf:
        tensors = cast(hf_export.hf_tensors(flat_tensors(params, "float32"), model), args.dtype)
        write_hf_directory(out, tensors, hf_export.hf_files(model, args.dtype), args.force, save_file)
        written = {"format": "hf", "architecture": hf_export.hf_config(model, args.dtype)["architectures"][0],
                   "bytes": sum(path.stat().st_size for path in out.iterdir())}
    else:
        tensors = flat_tensors(params, args.dtype)
        write_file(out, lambda path: save_file(tensors, path, metadata=metadata(config, tokenizer, workdir, step, args.dtype)))
        written = {"bytes": out.stat().st_size}
    n_params = sum(tensor.size for tensor in tensors.values())
    print(json.dumps({"out": str(out), "step": step, "tensors": len(tensors), "params": int(n_params), "dtype": args.dtype, **written}))
    return 0


def cast(tensors: dict, dtype: str) -> dict:
    import jax.numpy as jnp
    import numpy as np

    return {name: np.ascontiguousarray(tensor.astype(jnp.dtype(dtype))) for name, tensor in tensors.items()}


def shareable(path: Path) -> None:
    """safetensors writes 0600; a model file is made to be shared, like any other (the umask's mode)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def write_hf_directory(out: Path, tensors: dict, json_files: dict[str, str], force: bool, save_file) -> None:
    """The directory built in a temporary sibling of `out` (named with the pid, so the next export
    removes it after a kill: `files.remove_stale_temporaries`) and renamed into place whole; with
    --force the old one is moved aside first and deleted only once the new one is there. Out of
    space or read-only: StorageFailed (exit 74), nothing left."""
    partial, old = files.temporary_sibling(out), out.with_name(f".{out.name}.old-{os.getpid()}")
    try:
        files.remove_stale_temporaries(out)
        partial.mkdir()
        save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})  # transformers reads only "pt"-marked files
        for name, text in json_files.items():
            (partial / name).write_text(text, encoding="utf-8")
        for path in (*partial.iterdir(), partial):
            shareable(path)
        if force and out.is_dir():
            os.replace(out, old)
        os.replace(partial, out)
    except Exception as error:  # noqa: BLE001 — only storage failures are handled; the rest re-raise
        reason = files.storage_failure(error)
        if reason is None:
            raise
        if old.is_dir() and not out.exists():
            os.replace(old, out)  # the old model stays where it was
        raise StorageFailed(f"writing {out} failed ({reason}); nothing was left there: free space or pick a writable --out") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- loading


def model_config_from(settings: dict):
    """The ModelConfig of exported settings, dtype and attention resolved for the devices here."""
    from bigmodel.model_config import ModelConfig, current_platform, resolve_compute

    dtype, attention = resolve_compute(settings, *current_platform())
    try:
        return ModelConfig(**{**settings, "dtype": dtype, "attention": attention})
    except TypeError as error:  # a field this version does not know
        raise ConfigError(f"the exported model settings do not fit this bigmodel ({error}): load it with the version that wrote it") from None


def load_exported(path: str | os.PathLike):
    """(ModelConfig, params, tokenizer) from an `export` file: `Transformer(config).apply({"params":
    params}, tokens)` gives the run's logits. Parameters come back float32, as numpy arrays."""
    import numpy as np
    from flax import traverse_util
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        header = handle.metadata() or {}
        if header.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a bigmodel export (format {header.get('format')!r}): write one with `bigmodel export`")
        flat = {name: handle.get_tensor(name).astype(np.float32) for name in handle.keys()}
    params = traverse_util.unflatten_dict(flat, sep=SEPARATOR)
    return model_config_from(json.loads(header["model"])), params, tokenizer_from(json.loads(header["tokenizer"]))
