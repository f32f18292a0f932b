"""The HTTP server (``scalegan serve``): an API that generates images from loaded models, with dynamic batching,
and a page that uses it. Needs the ``serve`` extra (FastAPI, uvicorn, imageio with ffmpeg):
``pip install scalegan[serve]``.

``create_app(models, settings)`` (``scalegan/serve/app.py``) builds the app; ``Batcher`` (``batcher.py``) shares
forward passes between concurrent requests; ``ServedModel`` (``models.py``) is one model as the server runs it.
"""
