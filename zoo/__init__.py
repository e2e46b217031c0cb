"""The milcnn model zoo: ``registry.json`` and the released model folders, shipped in the wheel as ``milcnn.zoo``."""
