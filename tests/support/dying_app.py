"""An app that dies the way a server dies at the worst moment: after the commit, before
the answer. A request carrying `X-Die-After-Commit` has its effect committed (the route
has returned), then the process is SIGKILLed before a byte of the response is sent.

Served with `ServerProcess(asgi_factory="tests.support.dying_app:create_dying_app")`.
"""

from __future__ import annotations

import os
import signal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxoffice.api.app import create_app


class DieAfterCommit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        if b"x-die-after-commit" not in headers:
            await self.app(scope, receive, send)
            return

        async def die_instead(message: Message) -> None:
            if message["type"] == "http.response.start":
                os.kill(os.getpid(), signal.SIGKILL)
            await send(message)

        await self.app(scope, receive, die_instead)


def create_dying_app() -> ASGIApp:
    return DieAfterCommit(create_app())
