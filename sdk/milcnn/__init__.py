"""milcnn: classify and segment high-content-screening images with multiple-instance learning CNNs."""

__version__ = "0.1.0"
