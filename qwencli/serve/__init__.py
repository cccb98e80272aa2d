"""`qwen serve`: the model `qwen chat` would run, behind an OpenAI-compatible HTTP API.

- protocol.py  request bodies -> validated requests; results -> OpenAI's JSON shapes (pure)
- worker.py    the FIFO queue and the one generation at a time (on chat.engine + chat.session)
- app.py       the HTTP routes, keys, limits, CORS, the request log
- server.py    the lifecycle: choose and load the model, listen, serve, stop on a signal

Why Starlette + uvicorn rather than hand-written HTTP or a bigger framework: both are small,
well kept and widely deployed (Starlette is what FastAPI is built on); Starlette's
`StreamingResponse` writes Server-Sent Events as they come and, on uvicorn, notices a client that
went away (the ASGI `http.disconnect` message) and cancels the stream, which is how a generation
is stopped within a token of a client leaving; uvicorn accepts an already-bound socket, so the
address is claimed (and an address in use reported) before the model loads. Neither is imported
before `qwen serve` runs.
"""
