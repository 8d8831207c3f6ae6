"""facelit/nets: nn.Modules (backbones, necks, context modules, detectors) and their export."""

from facelit.nets.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OWN_BACKBONES,
    ImageNormalize,
    TimmBackbone,
    create_backbone,
)
from facelit.nets.context import SSH, DeformConvBNAct, create_context
from facelit.nets.export import export_onnx
from facelit.nets.fpn import FPN
from facelit.nets.mobilenet import MobileNetV1, mobilenet_v1_025, mobilenet_v1_050, mobilenet_v1_100
from facelit.nets.retinaface import DenseHead, MeshHead, RetinaFace, decode_outputs, detect, detect_multiscale

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OWN_BACKBONES",
    "ImageNormalize",
    "TimmBackbone",
    "create_backbone",
    "SSH",
    "DeformConvBNAct",
    "create_context",
    "export_onnx",
    "FPN",
    "MobileNetV1",
    "mobilenet_v1_025",
    "mobilenet_v1_050",
    "mobilenet_v1_100",
    "DenseHead",
    "MeshHead",
    "RetinaFace",
    "decode_outputs",
    "detect",
    "detect_multiscale",
]
