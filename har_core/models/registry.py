"""The model registry: one entry per architecture is the single source of truth.

Each `ModelSpec` holds everything the rest of HAR Studio needs to know about a model —
how to build it, what it eats (input size, normalisation, resize/crop), where Grad-CAM
looks, which parameters form the head, how it is trained by default, and where its
ImageNet weights come from. Transforms, training, inference and the app derive from it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import timm
import torch
import torchvision
from torch import nn

from har_core.models import archs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (0.5, 0.5, 0.5)  # inputs scaled to [-1, 1], as Google's TF models expect
TF_STD = (0.5, 0.5, 0.5)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's Kinetics-400 video weights
KINETICS_STD = (0.22803, 0.22145, 0.216989)


PRECISIONS = ("auto", "bf16", "fp32")  # Recipe.precision


def trains_in_bf16(precision: str, on_gpu: bool) -> bool:
    """Whether a recipe's training step runs under bfloat16 autocast: always with bf16, on a GPU with auto."""
    return precision == "bf16" or (precision == "auto" and on_gpu)


@dataclass(frozen=True)
class Recipe:
    """A training recipe: plain values, each overridable from the command line."""

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine | plateau | step | none
    warmup_epochs: int = 0
    step_size: int = 5  # StepLR
    gamma: float = 0.1  # StepLR / ReduceLROnPlateau factor
    plateau_patience: int = 2  # plateau: epochs without a lower val loss before the lr is cut
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    augment: str = "flip"  # comma-separated names from har_core.data.datasets.AUGMENTATIONS
    weighted_sampler: bool = False
    freeze_epochs: int = 0  # stage 1: only the head trains for this many epochs
    trainable: str = "all"  # stage 2: "all", "head", or comma-separated module prefixes
    finetune_lr: float = 0.0  # stage 2 learning rate (0: keep lr)
    patience: int = 0  # early stopping on val accuracy (0: off)
    aux_weight: float = 0.4  # InceptionV3 auxiliary logits
    tta: bool = False  # flip TTA at evaluation
    image_size: int = 0  # 0: the model's own input size; else train/evaluate at this size
    cached_views: int = 0  # >0: the frozen trunk runs once on this many augmented views (har_core.training.trunk)
    bn_frozen: bool = False  # every batch norm keeps its ImageNet statistics, trainable ones too (Keras' advice)
    ema_decay: float = 0.0  # >0: validate, keep and save an exponential moving average of the weights (per step)
    # training arithmetic: auto = bfloat16 autocast on a GPU, float32 on a CPU; bf16 = bfloat16 autocast on either
    # (a CPU with AVX512-BF16 trains a ResNet50 step about twice as fast: bench.train_speed); fp32 = none
    precision: str = "auto"
    # knowledge distillation (har_core.training.distill): comma-separated teacher run folders; their mean probability at
    # the temperature is the target, mixed with the hard-label loss by 1 - distill_weight
    teacher: str = ""
    distill_temperature: float = 4.0
    distill_weight: float = 1.0

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)


def weights_data_config(hub: str) -> dict:
    """Input size, mean/std, crop and interpolation as the published weights define them: timm's
    `pretrained_cfg` or torchvision's weight transforms (both ship with the packages: no download)."""
    kind, _, ident = hub.partition(":")
    if kind == "timm":
        cfg = timm.models.get_pretrained_cfg(ident.removeprefix("timm/")).to_dict()
        return {"input_size": cfg["input_size"][-1], "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]),
                "crop_pct": cfg["crop_pct"], "interpolation": cfg["interpolation"]}
    if kind == "torchvision":
        preset = torchvision.models.get_weight(ident).transforms()
        return {"input_size": preset.crop_size[0], "mean": tuple(preset.mean), "std": tuple(preset.std),
                "crop_pct": preset.crop_size[0] / preset.resize_size[0], "interpolation": preset.interpolation.value}
    raise ValueError(f"unknown weights source '{hub}'")


@dataclass(frozen=True)
class ModelSpec:
    """An architecture. Entries with published ImageNet weights (`hub`) take their input size, mean/std,
    crop and interpolation from those weights' own config; only weightless entries state them."""

    name: str
    build: Callable[[int], nn.Module]  # num_classes -> randomly initialised model
    cam_layer: str  # dotted path of the Grad-CAM target layer (chosen by bench/cam_layers.py)
    head: tuple[str, ...]  # module prefixes that make up the classifier head
    recipe: Recipe
    input_size: int = 0
    mean: tuple[float, float, float] = ()
    std: tuple[float, float, float] = ()
    crop_pct: float = 0.0
    interpolation: str = ""
    hub: str = ""  # the published weights: "torchvision:<weights enum>" or "timm:<hf id>" (`--pretrained hub`)
    offline: str = ""  # key into har_core.models.pretrained.OFFLINE_WEIGHTS (the same weights, shipped in a package)
    key_format: str = "native"  # how pretrained keys are named: native | efficientnet_pytorch | fid_inception
    # the network takes inputs scaled to [-1, 1] itself instead of the weights' ImageNet normalisation
    # (our InceptionV3 leaves out torchvision's `transform_input`, which converts the one into the other)
    scales_to_unit_range: bool = False
    description: str = ""
    default_pretrained: str = "none"
    trunk: tuple[str, ...] = ()  # modules the forward runs first, in order: cacheable when frozen
    # the module whose input is the image's embedding (har_core.retrieval.embeddings): the classifier head's input,
    # the pooled features every head here starts from (default: the first head module)
    embedding: str = ""
    # clip models: the network takes (3, frames, size, size), every `frame_stride`-th frame of the clip at its
    # own frame rate (har_core.data.datasets.ClipTransform); 0: an image model
    frames: int = 0
    frame_stride: int = 2
    # what Inside shows (har_core.explain.inside): (label, module) of each natural stage, in forward order; a stage's output
    # is that module's output
    stages: tuple[tuple[str, str], ...] = ()
    # (method, layer) where a CAM method works on another layer than cam_layer: ScoreCAM weighs each channel by a
    # positive score and keeps the sum above zero, so it needs an activation's output; on a layer before one (raw
    # values of both signs) the sum is below zero almost everywhere and its map is blank
    method_layers: tuple[tuple[str, str], ...] = ()

    def layer_for(self, method: str) -> str:
        """The dotted path of the layer `method` (a CAM method's name) explains."""
        return dict(self.method_layers).get(method, self.cam_layer)

    def __post_init__(self):
        if not self.embedding:
            object.__setattr__(self, "embedding", self.head[0])
        if self.hub:
            derived = weights_data_config(self.hub)
            if self.scales_to_unit_range:
                derived |= {"mean": TF_MEAN, "std": TF_STD}
            for key, value in derived.items():
                object.__setattr__(self, key, value)
        if not (self.input_size and self.mean and self.std and self.crop_pct and self.interpolation):
            raise ValueError(f"{self.name}: an entry without published weights states its preprocessing")

    @property
    def takes_clips(self) -> bool:
        return self.frames > 0

    @property
    def memory_format(self) -> torch.memory_format:
        """The fast layout of its weights and inputs (oneDNN on CPU, cuDNN): channels-last, in 3-D for clips."""
        return torch.channels_last_3d if self.takes_clips else torch.channels_last

    def data_config(self, image_size: int = 0) -> dict:
        """The timm-style data config every transform derives from; clip models add frames and stride."""
        size = image_size or self.input_size
        config = {
            "input_size": (3, size, size),
            "mean": self.mean,
            "std": self.std,
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
        }
        if self.takes_clips:
            config |= {"frames": self.frames, "frame_stride": self.frame_stride}
        return config


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown model '{name}'; known models: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def build_model(name: str, num_classes: int) -> nn.Module:
    return get_spec(name).build(num_classes)


def get_module(model: nn.Module, dotted: str) -> nn.Module:
    return model.get_submodule(dotted)


def is_head_param(spec: ModelSpec, param_name: str) -> bool:
    return any(param_name == h or param_name.startswith(h + ".") for h in spec.head)


# ---- recipes: the groups' reference recipes, by name ----------------------------------------

RECIPES: dict[str, Recipe] = {
    "efficientnet_b1": Recipe(
        epochs=25, batch_size=64, optimizer="adam", lr=1e-4, weight_decay=1e-4, scheduler="plateau",
        gamma=0.5, label_smoothing=0.1, mixup_alpha=0.2, augment="rrc,flip,rotate,color,randaugment",
        freeze_epochs=5, trainable="all", finetune_lr=3e-5, patience=6, tta=True),
    "custom_cnn": Recipe(
        epochs=40, batch_size=32, optimizer="adamw", lr=3e-4, weight_decay=1e-4, scheduler="cosine",
        warmup_epochs=3, label_smoothing=0.1, augment="rrc,flip,randaugment,erasing",
        weighted_sampler=True, patience=10),
    "resnet50": Recipe(
        epochs=15, batch_size=32, optimizer="adam", lr=1e-4, weight_decay=0.0, scheduler="step",
        step_size=5, gamma=0.1, augment="rrc,flip,rotate", trainable="layer4,fc"),
    "vgg16": Recipe(
        epochs=15, batch_size=32, optimizer="adam", lr=1e-4, weight_decay=1e-4, scheduler="step",
        step_size=5, gamma=0.1, label_smoothing=0.1, augment="rrc,flip,rotate",
        freeze_epochs=3, trainable="features.24,features.26,features.28,head", finetune_lr=3e-5),
    "inception_v3": Recipe(
        epochs=15, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=1e-4, scheduler="plateau",
        gamma=0.5, label_smoothing=0.1, augment="rrc,flip,rotate,color", freeze_epochs=4,
        trainable="Mixed_7b,Mixed_7c,AuxLogits,fc", finetune_lr=1e-4, patience=5, tta=True),
    "video": Recipe(
        epochs=20, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=1e-4, scheduler="cosine",
        warmup_epochs=1, label_smoothing=0.1, augment="rrc,flip", patience=8),
    "linear_probe": Recipe(
        epochs=5, batch_size=32, optimizer="adam", lr=1e-2, weight_decay=1e-4, scheduler="cosine",
        augment="flip", trainable="head"),
}


# ---- the entries -------------------------------------------------------------------------

# up to the 80/112-channel boundary: the last three stages and the head stay trainable
EFFICIENTNET_TRUNK = ("conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2", "blocks.3")
EFFICIENTNET_STAGES = (("stem", "bn1"), *((f"stage {i + 1}", f"blocks.{i}") for i in range(7)), ("head conv", "bn2"))


def _timm(arch: str, drop_rate: float = 0.2):
    return lambda num_classes: timm.create_model(arch, pretrained=False, num_classes=num_classes,
                                                 drop_rate=drop_rate)


def _resnet50(num_classes: int) -> nn.Module:
    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _mobilenet_v2(num_classes: int) -> nn.Module:
    model = torchvision.models.mobilenet_v2(weights=None)
    model.classifier[1] = nn.Linear(model.classifier[1].in_features, num_classes)
    return model


register(ModelSpec(
    name="custom_cnn", build=archs.CustomCNN, input_size=256, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    crop_pct=1.0, interpolation="bilinear", cam_layer="features.4", head=("classifier",),
    recipe=RECIPES["custom_cnn"], stages=tuple((f"block {i + 1}", f"features.{i}") for i in range(5)),
    description="The groups' baseline: five Conv3x3-BN-ReLU-MaxPool blocks, trained from scratch."))

for _arch, _weights in (("efficientnet_b1", "ra4_e3600_r240_in1k"), ("efficientnet_b3", "ra2_in1k")):
    register(ModelSpec(
        name=_arch, build=_timm(_arch), cam_layer="conv_head", method_layers=(("ScoreCAM", "bn2"),),
        head=("classifier",), recipe=RECIPES["efficientnet_b1"],
        hub=f"timm:timm/{_arch}.{_weights}", default_pretrained="hub", trunk=EFFICIENTNET_TRUNK,
        stages=EFFICIENTNET_STAGES,
        description=f"timm {_arch} with Dropout 0.2 + Linear head, fine-tuned from ImageNet."))

for _i in (0, 1, 2):
    register(ModelSpec(
        name=f"efficientnet_lite{_i}", build=_timm(f"tf_efficientnet_lite{_i}"), cam_layer="conv_head",
        method_layers=(("ScoreCAM", "bn2"),),  # conv_head's batch norm and ReLU6 (bench/cam_layers_scorecam.json)
        head=("classifier",),
        recipe=RECIPES["efficientnet_b1"], hub=f"timm:timm/tf_efficientnet_lite{_i}.in1k",
        offline=f"efficientnet_lite{_i}", key_format="efficientnet_pytorch", default_pretrained="offline",
        trunk=EFFICIENTNET_TRUNK, stages=EFFICIENTNET_STAGES,
        description=f"timm tf_efficientnet_lite{_i}; ImageNet weights available offline."))

register(ModelSpec(
    name="vgg16", build=archs.vgg16_gap, cam_layer="features.29", head=("head",), recipe=RECIPES["vgg16"],
    hub="torchvision:VGG16_Weights.IMAGENET1K_V1", offline="vgg16_keras", key_format="keras_vgg16_onnx",
    default_pretrained="offline", trunk=tuple(f"features.{i}" for i in range(24)),  # blocks 1–4: block 5 can train
    stages=tuple((f"block {i + 1}", f"features.{pool}") for i, pool in enumerate((4, 9, 16, 23, 30))),
    description="torchvision VGG16 convolutional base + global average pool, Linear 512→256, Dropout, Linear; "
                "ImageNet conv weights available offline (Oxford's, from a Keras export)."))

register(ModelSpec(
    name="resnet50", build=_resnet50, cam_layer="layer4", head=("fc",), recipe=RECIPES["resnet50"],
    hub="torchvision:ResNet50_Weights.IMAGENET1K_V2", default_pretrained="hub",
    stages=(("stem", "maxpool"), *((f"layer{i}", f"layer{i}") for i in range(1, 5))),
    description="torchvision ResNet50 with a new Linear head."))

register(ModelSpec(
    name="inception_v3", build=archs.InceptionV3, cam_layer="Mixed_7c", head=("fc", "AuxLogits"),
    recipe=RECIPES["inception_v3"], hub="torchvision:Inception_V3_Weights.IMAGENET1K_V1", scales_to_unit_range=True,
    offline="inception_v3_fid", key_format="fid_inception", default_pretrained="offline",
    trunk=archs.INCEPTION_STAGES[:archs.INCEPTION_STAGES.index("Mixed_6e") + 1],
    stages=(("stem 1", "maxpool1"), ("stem 2", "maxpool2"), ("Mixed_5d", "Mixed_5d"), ("Mixed_6e", "Mixed_6e"),
            ("Mixed_7c", "Mixed_7c")),
    description="InceptionV3 (Google 2015 backbone, TF-style pooling) with auxiliary logits in training."))

register(ModelSpec(
    name="mobilenet_v2", build=_mobilenet_v2, cam_layer="features.17", head=("classifier",),
    method_layers=(("ScoreCAM", "features.18"),),  # features.17 ends in a linear bottleneck: no activation
    recipe=RECIPES["efficientnet_b1"], hub="torchvision:MobileNet_V2_Weights.IMAGENET1K_V1",
    offline="mobilenet_v2", default_pretrained="offline", trunk=tuple(f"features.{i}" for i in range(14)),
    stages=(("stem", "features.0"), *((f"stage {i + 1}", f"features.{n}") for i, n in enumerate((1, 3, 6, 13, 17))),
            ("head conv", "features.18")),
    description="torchvision MobileNetV2; exact ImageNet weights available offline."))


# ---- clip models: (3, 16, 112, 112) clips of every second frame ----------------------------------

register(ModelSpec(
    name="c3d_small", build=archs.C3DSmall, input_size=112, mean=KINETICS_MEAN, std=KINETICS_STD,
    crop_pct=112 / 128, interpolation="bilinear", cam_layer="features.3", head=("classifier",),
    recipe=RECIPES["video"], frames=16,
    description="A small C3D: four Conv3d-BN-ReLU-MaxPool3d blocks on 16-frame clips, trained from scratch."))


def _torchvision_video(arch: str):
    def build(num_classes: int) -> nn.Module:
        model = getattr(torchvision.models.video, arch)(weights=None)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        return model
    return build


for _arch, _weights in (("r3d_18", "R3D_18_Weights"), ("r2plus1d_18", "R2Plus1D_18_Weights")):
    register(ModelSpec(
        name=_arch, build=_torchvision_video(_arch), cam_layer="layer4", head=("fc",),
        recipe=RECIPES["video"].replace(lr=1e-4), hub=f"torchvision:{_weights}.KINETICS400_V1", frames=16,
        description=f"torchvision {_arch} on 16-frame clips; Kinetics-400 weights with --pretrained hub."))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
