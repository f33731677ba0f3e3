"""learned hand landmarks: distil MediaPipe Hands into a MobileNetV2 landmark regressor."""

__version__ = "0.1.0"
