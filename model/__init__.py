"""The model side: the OpenVINO GenAI engine, model loading and the bundled model."""
