"""An OpenAI-compatible server over the LLMA engine: `python -m rag.serve --port 8000`.

Chat and text completions (streaming or not), Predicted Outputs as LLMA references, a request's
own references and LLMA settings as extensions, the `llma-rag` model answering from the server's
index; `build_app(pipeline)` for tests and embedding, `rag.serve.ray_app` for Ray Serve.
"""
from rag.serve.app import ServeOptions, build_app, create_app
from rag.serve.backend import Generation, GenerationBackend, GenerationStream, ThreadedBackend
from rag.serve.schemas import Limits

__all__ = ["Generation", "GenerationBackend", "GenerationStream", "Limits", "ThreadedBackend", "ServeOptions",
           "build_app", "create_app"]
