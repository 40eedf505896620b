"""Fake picamera2.encoders: Encoder, Quality and H264Encoder (a real libx264 underneath)."""

from .encoder import Encoder, Quality
from .h264_encoder import H264Encoder

__all__ = ["Encoder", "H264Encoder", "Quality"]
