import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # pytest-qt and napari's viewer fixture without a display
