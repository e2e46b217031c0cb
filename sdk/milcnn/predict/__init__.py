"""One image through a model: the ``Classifier`` facade over input reading, preparation, the runtime,
the tiled runner and the result."""
