"""Load a `get_config(arg)` file, apply `--config.a.b=value` overrides, validate once.

Every mistake becomes one `ConfigError` line that names the key and the fix; the CLI prints it
and exits 2 before anything is written.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import math
from pathlib import Path

import ml_collections

from bigmodel.arguments import MAX_SEED, is_seed
from bigmodel.exit_codes import ConfigError  # re-exported: `from bigmodel.config import ConfigError` keeps working
from bigmodel.model_config import ATTENTIONS, AUTO, DTYPES, MLPS, REMAT_NAMES, compute_dtype, cudnn_problem, current_platform, default_d_ff
from bigmodel.mup import PARAMETRIZATIONS, implicit_base_head_dim_problem


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`"configs/lm.py:L4"` → the ConfigDict its `get_config("L4")` returns."""
    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise ConfigError(f"config file {path!r} not found: pass --config path/to/file.py[:arg]")
    module_spec = importlib.util.spec_from_file_location(f"_bigmodel_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ConfigError(f"config file {path!r} line {error.lineno}: {error.msg}: fix the Python syntax") from None
    except SystemExit as exit_info:  # a config is data: exiting, whatever the code, is not a way to give one
        raise ConfigError(f"config file {path!r} called sys.exit({exit_info.code!r}) while loading: define get_config(arg)") from None
    except Exception as error:  # noqa: BLE001 — any import-time failure is the file's problem
        raise ConfigError(f"config file {path!r} failed to load: {type(error).__name__}: {error}") from None
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"config file {path!r} defines no get_config(arg)")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    except SystemExit as exit_info:
        raise ConfigError(f"config file {path!r}: get_config({arg!r}) called sys.exit({exit_info.code!r}): return a ConfigDict") from None
    except Exception as error:  # noqa: BLE001 — the config's own code, reported as one line
        raise ConfigError(f"config file {path!r}: get_config({arg!r}) failed: {type(error).__name__}: {error}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"config file {path!r}: get_config() returned {type(config).__name__}, expected an ml_collections.ConfigDict")
    return config


def parse_override(arg: str) -> tuple[str, str]:
    """`"--config.train.steps=200"` → ("train.steps", "200")."""
    key, sep, value = arg.removeprefix("--config.").partition("=")
    if not arg.startswith("--config.") or not sep:
        raise ConfigError(f"cannot read override {arg!r}: write --config.group.key=value")
    return key, value


def _coerce(key: str, text: str, current):
    """Parse `text` as the type of the value it replaces."""
    wanted = type(current)
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        value = ast.literal_eval(text)  # tuples, lists, None-valued fields
        if isinstance(current, tuple) and isinstance(value, int) and not isinstance(value, bool):
            value = (value,)  # keep_steps=1000: one step needs no trailing comma
        if current is not None and not isinstance(value, (tuple, list)):
            raise ValueError
        return tuple(value) if isinstance(current, tuple) else value
    except (ValueError, SyntaxError):
        raise ConfigError(f"config.{key} expects {wanted.__name__}, got {text!r}") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """Set each dotted key to its parsed value; unknown keys are errors, never silently added."""
    config = copy.deepcopy(config)  # the caller's config stays as it was
    for key, text in overrides.items():
        *groups, leaf = key.split(".")
        node = config
        for depth, group in enumerate(groups):
            if not isinstance(node, ml_collections.ConfigDict) or group not in node:
                known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
                where = ".".join(groups[:depth]) or "config"
                raise ConfigError(f"unknown config key config.{key}: {where} has {known}")
            node = node[group]
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
            raise ConfigError(f"unknown config key config.{key}: valid keys here are {known}")
        if isinstance(node[leaf], ml_collections.ConfigDict):
            raise ConfigError(f"config.{key} is a group: set one of its keys, e.g. config.{key}.{next(iter(node[leaf].keys()))}")
        node[leaf] = _coerce(key, text, node[leaf])
    return config


def load_config(spec: str, overrides: dict[str, str] | None = None) -> ml_collections.ConfigDict:
    """The config file's config with the overrides applied, resolved (see `resolve`)."""
    return resolve(apply_overrides(load_config_file(spec), overrides or {}))


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config as it will run, with values that depend on others made explicit.

    Warmup is capped at the run length, so `--config.train.steps=40` works on a config whose
    default warmup is longer; config.json records the effective value.
    """
    config = copy.deepcopy(config)
    steps, warmup = _get(config, "train.steps"), _get(config, "optim.warmup_steps")
    if isinstance(steps, int) and isinstance(warmup, int) and steps > 0 and warmup > steps:
        config.optim.warmup_steps = steps
    return config


CHOICES = {
    "model.positions": ("rope", "learned"),
    "model.dtype": (AUTO, *DTYPES),
    "model.remat": REMAT_NAMES,
    "model.attention": (AUTO, *ATTENTIONS),
    "data.tokenizer": ("bytes", "spm", "bpe"),
    "optim.name": ("adamw",),
    "optim.schedule": ("constant", "cosine", "wsd"),
    "optim.decay_shape": ("linear", "1-sqrt"),
}
POSITIVE_INTS = (
    "model.d_model", "model.n_layers", "model.n_heads", "model.max_seq_len",
    "data.seq_len", "data.vocab_size", "train.steps", "train.batch_size", "train.grad_accum",
    "train.log_every", "checkpoint.every_steps", "checkpoint.keep", "eval.every_steps", "eval.batches",
)
MESH_AXES = ("data", "fsdp", "tensor")
SPM_MAX_LINE_BYTES = 4192  # sentencepiece's max_sentence_length: it skips longer lines when training
CHECKPOINT_SCHEDULES = ("rolling", "log")  # bigmodel.checkpoint.kept_steps


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if part not in node:
            raise ConfigError(f"config.{dotted} is missing: start from configs/lm.py and override keys")
        node = node[part]
    return node


def resolve_mesh_shape(mesh_config, n_devices: int) -> dict[str, int]:
    """Fill the one −1 axis so the mesh covers every device; errors say what would fit."""
    shape = {axis: int(mesh_config[axis]) for axis in MESH_AXES}
    fill = [axis for axis, size in shape.items() if size == -1]
    if len(fill) > 1 or any(size == 0 or size < -1 for size in shape.values()):
        raise ConfigError(f"config.mesh {shape} is invalid: use positive sizes and at most one -1 (fill)")
    fixed = math.prod(size for size in shape.values() if size != -1)
    if fill:
        if n_devices % fixed:
            raise ConfigError(f"config.mesh {shape} cannot fill {n_devices} devices: the fixed axes' product {fixed} must divide it")
        shape[fill[0]] = n_devices // fixed
    elif fixed != n_devices:
        raise ConfigError(f"config.mesh {shape} uses {fixed} devices but {n_devices} are present: make the product {n_devices} or set one axis to -1")
    return shape


def dcn_data(mesh_config) -> int:
    """`config.mesh.dcn_data`: how many slices/hosts the data axis spans; configs saved before
    the key existed ran on one, so a missing key reads as 1."""
    return mesh_config.get("dcn_data", 1)


def granule_attribute(platform: str) -> str:
    """The device attribute that names a device's DCN unit: a TPU slice shares one ICI domain
    (and a host may be one of several in a slice); elsewhere one process drives one host's
    NVLink-joined GPUs, so the process is the unit."""
    return "slice_index" if platform == "tpu" else "process_index"


def count_slices(devices) -> int:
    """How many DCN units (TPU slices, else processes) `devices` span."""
    return len({getattr(device, granule_attribute(device.platform)) for device in devices})


def current_slice_count() -> int:
    """`count_slices` of the devices JAX sees; imports JAX, so only on demand."""
    import jax

    return count_slices(jax.devices())


def check_dcn_data(value, data_size: int, n_slices: int | None) -> None:
    """The data axis splits into `value` blocks, one per slice/host (`n_slices`; None: the live
    count), so the value must divide it and match the slices exactly:
    `create_hybrid_device_mesh` puts one DCN index on each slice."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config.mesh.dcn_data={value!r} is not a positive integer: set it to the number of slices/hosts the data axis spans (1 = one)")
    if value == 1:
        return
    if data_size % value:
        raise ConfigError(f"config.mesh.dcn_data={value} does not divide the data axis mesh.data={data_size}: make mesh.data a multiple of dcn_data")
    n_slices = current_slice_count() if n_slices is None else n_slices
    if n_slices != value:
        raise ConfigError(
            f"config.mesh.dcn_data={value} must equal the number of slices/hosts, {n_slices} here "
            f"(TPU slices, else jax processes): set mesh.dcn_data={n_slices}, or 1 for a flat mesh"
        )


def check_attention(model, platform: str | None, device_kind: str) -> None:
    """An explicit `attention=cudnn` must be able to run on this platform (`platform=None`: the
    one JAX sees, looked up only here so that other configs validate without importing JAX)."""
    if model.attention != "cudnn":
        return
    if platform is None:
        platform, device_kind = current_platform()
    dtype = compute_dtype(model.dtype, platform)
    problem = cudnn_problem(dtype, model.d_model // model.n_heads, platform, device_kind)
    if problem:
        raise ConfigError(f"config.model.attention=cudnn (cuDNN flash attention) {problem}: use attention=auto, or change model.dtype / n_heads")


def check_parametrization(model) -> None:
    """`model.parametrization` and its muP keys (`bigmodel.mup`); a config saved before they
    existed has none of them (read as SP), so all are optional here."""
    parametrization = model.get("parametrization", "sp")
    if parametrization not in PARAMETRIZATIONS:
        raise ConfigError(f"config.model.parametrization must be one of {', '.join(PARAMETRIZATIONS)}, got {parametrization!r}")
    base_width, base_head_dim = model.get("mup_base_width", 64), model.get("mup_base_head_dim", 0)
    if isinstance(base_width, bool) or not isinstance(base_width, int) or base_width < 1:
        raise ConfigError(f"config.model.mup_base_width must be a positive integer (the d_model where muP equals SP), got {base_width!r}")
    if isinstance(base_head_dim, bool) or not isinstance(base_head_dim, int) or base_head_dim < 0:
        raise ConfigError(f"config.model.mup_base_head_dim must be 0 (this model's head_dim) or a positive integer, got {base_head_dim!r}")
    if parametrization == "mup" and (problem := implicit_base_head_dim_problem(model.d_model, model.n_heads, base_width, base_head_dim)):
        raise ConfigError(problem)
    if parametrization == "mup" and model.tie_embeddings:
        raise ConfigError("config.model.parametrization=mup needs an untied LM head (muP scales the readout and the embedding "
                          "differently): set model.tie_embeddings=false")


def check_seed(seed) -> None:
    """config.seed, for a training run and a fine-tuning run alike: the rule `generate --seed` follows."""
    if not is_seed(seed):
        raise ConfigError(f"config.seed must be a whole number from 0 to {MAX_SEED} (JAX keeps 32 bits of it), got {seed!r}")


def block_widths(model) -> tuple[int, int]:
    """(d_ff, n_kv_heads) as the model builds them: 0 resolved to the block's usual width and to
    n_heads (`ModelConfig`)."""
    return model.d_ff or default_d_ff(model.get("mlp", "gelu"), model.d_model), model.get("n_kv_heads", 0) or model.n_heads


def check_block(model) -> None:
    """`model.mlp`, `model.d_ff` (0: the block's usual) and `model.n_kv_heads` (0: n_heads), which
    must divide n_heads so that every key/value head serves a whole group of query heads. A
    config written before mlp and n_kv_heads existed has neither (GPT's block), so both are
    optional here."""
    if model.get("mlp", "gelu") not in MLPS:
        raise ConfigError(f"config.model.mlp must be one of {', '.join(MLPS)}, got {model.mlp!r}")
    n_kv_heads = model.get("n_kv_heads", 0)
    for key, value in (("d_ff", model.d_ff), ("n_kv_heads", n_kv_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"config.model.{key} must be a positive integer or 0 (the usual for this block), got {value!r}")
    if n_kv_heads and model.n_heads % n_kv_heads:
        raise ConfigError(f"config.model.n_kv_heads={n_kv_heads} does not divide n_heads={model.n_heads}: pick a divisor "
                          f"(1 = multi-query, {model.n_heads} = every head its own keys and values), or 0 for n_heads")


def check_optim(optim, steps: int) -> None:
    """The optimizer group's ranges, for a training run and a fine-tuning run alike."""
    if not (optim.lr > 0 and math.isfinite(optim.lr)):
        raise ConfigError(f"config.optim.lr must be positive and finite, got {optim.lr}")
    if optim.warmup_steps < 0 or optim.warmup_steps > steps:
        raise ConfigError(f"config.optim.warmup_steps={optim.warmup_steps} must be between 0 and train.steps={steps}")
    if not (0.0 <= optim.b1 < 1.0 and 0.0 <= optim.b2 < 1.0):
        raise ConfigError(f"config.optim.b1 and b2 must be in [0, 1), got {optim.b1}, {optim.b2}")
    if not (0 <= optim.weight_decay < math.inf and 0 <= optim.grad_clip <= math.inf):  # also refuses NaN
        raise ConfigError(f"config.optim.weight_decay must be finite and >= 0, and grad_clip >= 0 (inf: none), got {optim.weight_decay}, {optim.grad_clip}")
    if not 0.0 < optim.decay_fraction <= 1.0 or not 0.0 <= optim.min_lr_ratio <= 1.0:
        raise ConfigError("config.optim.decay_fraction must be in (0, 1] and min_lr_ratio in [0, 1]")


def check_checkpoint(checkpoint, steps: int) -> None:
    """`checkpoint.schedule` and `checkpoint.keep_steps`; a config saved before they existed has
    neither (read as rolling, none), so both are optional here."""
    schedule = checkpoint.get("schedule", "rolling")
    if schedule not in CHECKPOINT_SCHEDULES:
        raise ConfigError(f"config.checkpoint.schedule must be one of {', '.join(CHECKPOINT_SCHEDULES)}, got {schedule!r}")
    keep_steps = checkpoint.get("keep_steps", ())
    if not isinstance(keep_steps, (tuple, list)) or not all(isinstance(step, int) and not isinstance(step, bool) and step >= 1 for step in keep_steps):
        raise ConfigError(f"config.checkpoint.keep_steps must be positive step numbers, e.g. --config.checkpoint.keep_steps=1000,2000 (one: 1000), got {keep_steps!r}")
    beyond = sorted(step for step in keep_steps if step > steps)
    if beyond:
        raise ConfigError(f"config.checkpoint.keep_steps {beyond} are beyond train.steps={steps}: drop them or raise train.steps")


def check_branch_point(train) -> None:
    """`train.init_from` / `train.init_step` (bigmodel/branch.py): both or neither, and a step
    inside this run. Whether the parent matches is checked when it is read (`branch.check_branch`)."""
    init_from, step = train.get("init_from", ""), train.get("init_step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigError(f"config.train.init_step must be a step number >= 0, got {step!r}")
    if bool(init_from) != bool(step):
        raise ConfigError(f"config.train.init_from={init_from!r} and init_step={step} go together: set both (a branch) or neither")
    if step and step >= train.steps:
        raise ConfigError(f"config.train.init_step={step} must be below train.steps={train.steps}: the branch trains the steps after it")


def check_data(data) -> None:
    """A dataset name `bigmodel.data.names` knows (it owns the names: imported here, not at
    the top, so that loading a config needs no numpy), a vocabulary the tokenizer can have, and
    for a markov corpus documents the tokenizer can train on."""
    from bigmodel.data.markov_chain import is_markov_name
    from bigmodel.data.names import SYNTHETIC, check_dataset_name

    # Synthetic tokens are drawn, not tokenized: any vocabulary goes with any tokenizer setting.
    if data.tokenizer == "bytes" and data.vocab_size != 256 and data.dataset != SYNTHETIC:
        raise ConfigError(f"config.data.vocab_size must be 256 with the bytes tokenizer, got {data.vocab_size}")
    if data.tokenizer == "bpe" and data.vocab_size < 256 and data.dataset != SYNTHETIC:
        raise ConfigError(f"config.data.vocab_size={data.vocab_size} is too small for the bpe tokenizer: it starts from the 256 bytes, so use 256 or more")
    check_dataset_name(data.dataset)
    if is_markov_name(data.dataset):
        check_markov_documents(data)


def check_markov_documents(data) -> None:
    """A markov corpus's one-line documents must fit the line length sentencepiece trains on."""
    from bigmodel.data.markov_chain import markov_options

    options = markov_options(data.dataset)
    if data.tokenizer == "spm" and options.document_bytes > SPM_MAX_LINE_BYTES:
        raise ConfigError(
            f"config.data.dataset={data.dataset!r} has one-line documents of {options.document_bytes} bytes, longer than the "
            f"{SPM_MAX_LINE_BYTES} that sentencepiece trains on: add document_bytes=4096 to the markov options, or use data.tokenizer=bytes"
        )


def check_logging(logging) -> None:
    """A W&B project name W&B accepts, and wandb installed to log to it (found, not imported: it is slow)."""
    project = logging.get("wandb", "") if logging is not None else ""
    if not project:
        return
    if not isinstance(project, str) or len(project) > 128 or any(char in project for char in "/\\#?%:"):
        raise ConfigError(f"config.logging.wandb={project!r} is not a W&B project name: at most 128 characters, none of / \\ # ? % :")
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError(f"config.logging.wandb={project!r} needs the wandb package: pip install 'bigmodel[wandb]'")


def validate(config: ml_collections.ConfigDict, n_devices: int, n_processes: int = 1,
             platform: str | None = None, device_kind: str = "", n_slices: int | None = None) -> None:
    """Raise ConfigError for the first problem found; return None when the config can run on
    `platform` (jax.default_backend(); None: the current one) and its `device_kind`, across
    `n_slices` slices/hosts (None: counted from JAX, only when mesh.dcn_data > 1)."""
    for key in POSITIVE_INTS:
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"config.{key} must be a positive integer, got {value!r}")
    check_seed(config.seed)
    for key, allowed in CHOICES.items():
        if _get(config, key) not in allowed:
            raise ConfigError(f"config.{key} must be one of {', '.join(allowed)}, got {_get(config, key)!r}")
    model, data, train, optim = config.model, config.data, config.train, config.optim
    if model.d_model % model.n_heads:
        raise ConfigError(f"config.model.d_model={model.d_model} is not divisible by n_heads={model.n_heads}: pick n_heads dividing d_model")
    if model.positions == "rope" and (model.d_model // model.n_heads) % 2:
        raise ConfigError(f"rotary positions need an even head_dim, got d_model/n_heads={model.d_model // model.n_heads}")
    if data.seq_len > model.max_seq_len:
        raise ConfigError(f"config.data.seq_len={data.seq_len} is above the model's limit model.max_seq_len={model.max_seq_len}: lower seq_len or raise max_seq_len")
    if not 0.0 <= model.dropout < 1.0:
        raise ConfigError(f"config.model.dropout must be in [0, 1), got {model.dropout}")
    if not isinstance(model.scan_layers, bool):
        raise ConfigError(f"config.model.scan_layers must be true or false, got {model.scan_layers!r}")
    if isinstance(model.loss_chunk_tokens, bool) or not isinstance(model.loss_chunk_tokens, int) or model.loss_chunk_tokens < 0:
        raise ConfigError(f"config.model.loss_chunk_tokens must be 0 (off) or a positive number of tokens, got {model.loss_chunk_tokens!r}")
    check_attention(model, platform, device_kind)
    check_block(model)
    check_parametrization(model)
    check_data(data)
    check_optim(optim, train.steps)
    check_checkpoint(config.checkpoint, train.steps)
    check_branch_point(train)
    check_logging(config.get("logging"))
    if train.batch_size % train.grad_accum:
        raise ConfigError(f"config.train.batch_size={train.batch_size} is not divisible by grad_accum={train.grad_accum}")
    mesh = resolve_mesh_shape(config.mesh, n_devices)
    check_dcn_data(dcn_data(config.mesh), mesh["data"], n_slices)
    batch_shards = mesh["data"] * mesh["fsdp"]
    micro_batch = train.batch_size // train.grad_accum
    if micro_batch % batch_shards or micro_batch % n_processes:
        raise ConfigError(
            f"micro-batch batch_size/grad_accum={micro_batch} must be divisible by mesh data*fsdp={batch_shards} "
            f"and by the {n_processes} processes: change train.batch_size or the mesh"
        )
    d_ff, n_kv_heads = block_widths(model)
    for axis in ("tensor",):
        for name, size in (("n_heads", model.n_heads), ("n_kv_heads", n_kv_heads), ("d_ff", d_ff), ("vocab_size", data.vocab_size)):
            if size % mesh[axis]:
                raise ConfigError(f"config.model/data {name}={size} is not divisible by mesh.{axis}={mesh[axis]}")
    if model.d_model % mesh["fsdp"]:
        raise ConfigError(f"config.model.d_model={model.d_model} is not divisible by mesh.fsdp={mesh['fsdp']}")
    for logical, mesh_axes in config.sharding.rules:
        names = mesh_axes if isinstance(mesh_axes, (tuple, list)) else (mesh_axes,)
        unknown = [name for name in names if name is not None and name not in MESH_AXES]
        if unknown:
            raise ConfigError(f"config.sharding.rules maps {logical!r} to unknown mesh axis {unknown[0]!r}: use {', '.join(MESH_AXES)}")


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


# Keys added after runs had been written: a config.json without them reads as these values
# (what those runs computed), so older runs still resume, evaluate and branch.
LATER_KEYS = {"optim.decay_shape": "linear", "train.init_from": "", "train.init_step": 0,
              "checkpoint.schedule": "rolling", "checkpoint.keep_steps": (),
              "model.parametrization": "sp", "model.mup_base_width": 64, "model.mup_base_head_dim": 0,
              "model.mlp": "gelu", "model.n_kv_heads": 0}


def with_later_keys(saved: dict) -> dict:
    """A saved config (nested dicts) with every `LATER_KEYS` key it lacks filled in."""
    saved = json.loads(json.dumps(saved))
    for dotted, value in LATER_KEYS.items():
        group, key = dotted.split(".")
        if isinstance(saved.get(group), dict):
            saved[group].setdefault(key, list(value) if isinstance(value, tuple) else value)
    return saved


def from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of `to_json` (lists come back as tuples, as the config files write them); keys
    added since the file was written get their `LATER_KEYS` values."""

    def tuplify(value):
        if isinstance(value, list):
            return tuple(tuplify(item) for item in value)
        if isinstance(value, dict):
            return {key: tuplify(item) for key, item in value.items()}
        return value

    return ml_collections.ConfigDict(tuplify(with_later_keys(json.loads(text))))
