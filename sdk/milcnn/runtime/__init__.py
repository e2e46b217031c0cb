"""Runtimes that run an exported network: onnxruntime and OpenVINO, behind one ``Runtime`` protocol."""
