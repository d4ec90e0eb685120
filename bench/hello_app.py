"""Bare BlackSheep hello-world app: the ceiling of `bench/http_api.py` and `bench/asgi_servers.py`.

``GET /hello`` returns ``{"hello": "world"}`` encoded with orjson, with
content-type ``application/json``. Serve it as ``hello_app:app`` from the
``bench`` directory (uvicorn or granian ``--interface asgi``).
"""

import orjson
from blacksheep import Application, Content, Response

app = Application()


@app.router.get("/hello")
async def hello() -> Response:
    return Response(200, content=Content(b"application/json", orjson.dumps({"hello": "world"})))
