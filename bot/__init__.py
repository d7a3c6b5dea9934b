"""The conversation core: history, trimming, prompt rendering and streaming replies."""
