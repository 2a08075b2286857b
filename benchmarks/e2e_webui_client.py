"""The Open WebUI side of the end-to-end run: a real server as a subprocess, and its API.

Routes as read from open-webui 0.12.4's source: ``/ready`` (readiness),
``/api/v1/auths/signup`` (the first user becomes admin), ``/api/v1/auths/add``
(admin creates a user and gets the user's token), ``/api/v1/functions/create``,
``/id/{id}/toggle``, ``/id/{id}/toggle/global``, ``/id/{id}/valves/update``,
``/api/models`` and ``/api/chat/completions`` (a bare call without chat_id or
parent_id is answered in the request itself, after the filter's ``request`` hook).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import aiohttp

from benchmarks.e2e_gateway import MODEL, marker

ROOT = Path(__file__).resolve().parent.parent
OPENWEBUI = ROOT / ".venv-openwebui" / "bin" / "open-webui"
FILTER_FILE = ROOT / "deploy" / "openwebui" / "user_enricher_filter.py"
FUNCTION_ID = "user_enricher"
PASSWORD = "E2e-Passw0rd!"
USERS = ("mike.chen", "ana.lima", "raj.patel", "sam.okafor", "li.wei")
START_TIMEOUT_S = 300.0
CALL_TIMEOUT_S = 60.0


class OpenWebUI:
    """A real Open WebUI server as a subprocess (its own process group)."""

    def __init__(self, data_dir: Path, env: Mapping[str, str]) -> None:
        """Run with DATA_DIR ``data_dir`` and exactly ``env``; logs in data_dir/openwebui.log."""
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "openwebui.log"
        self._env = dict(env)
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self, client: aiohttp.ClientSession) -> None:
        """Start it and poll ``GET /ready`` until it answers 200 (bounded)."""
        self._log = _open_log(self.log_path)
        self._proc = await asyncio.create_subprocess_exec(
            str(OPENWEBUI),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(
                        f"Open WebUI exited ({self._proc.returncode}): {self.tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with client.get(f"{self.base}/ready", timeout=_timeout(2)) as reply:
                        if reply.status == 200:
                            return
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        """SIGTERM its process group, SIGKILL after 15 s; always closes the log."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 25) -> str:
        """The last lines of its log."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


async def api(
    client: aiohttp.ClientSession, method: str, url: str, token: str = "", body: Any = None
) -> Any:
    """One Open WebUI API call; its JSON answer, RuntimeError on a non-2xx status."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.request(
        method, url, json=body, headers=headers, timeout=_timeout(CALL_TIMEOUT_S)
    ) as reply:
        text = await reply.text()
        if reply.status >= 300:
            raise RuntimeError(f"{method} {url} -> {reply.status}: {text[:300]}")
        return await reply.json(content_type=None) if text else None


async def set_up(client: aiohttp.ClientSession, base: str, api_url: str, token: str) -> list[str]:
    """Admin signup, five users, the filter installed; returns the users' tokens."""
    auth = f"{base}/api/v1/auths"
    admin = await api(
        client,
        "POST",
        f"{auth}/signup",
        body={"name": "E2E Admin", "email": "admin@example.com", "password": PASSWORD},
    )
    if admin.get("role") != "admin":
        raise RuntimeError(f"first signup is not admin: {admin.get('role')}")
    root = str(admin["token"])
    tokens = []
    for user in USERS:
        name = user.replace(".", " ").title()
        body = {"name": name, "email": f"{user}@example.com", "password": PASSWORD, "role": "user"}
        tokens.append(str((await api(client, "POST", f"{auth}/add", root, body))["token"]))
    functions = f"{base}/api/v1/functions"
    content = FILTER_FILE.read_text()
    meta = {"description": "Reports which user sent each LLM request to otel-user-enricher."}
    form = {"id": FUNCTION_ID, "name": "User Enricher", "content": content, "meta": meta}
    await api(client, "POST", f"{functions}/create", root, form)
    await api(client, "POST", f"{functions}/id/{FUNCTION_ID}/toggle", root)
    await api(client, "POST", f"{functions}/id/{FUNCTION_ID}/toggle/global", root)
    valves = {"endpoint": api_url, "token": token, "source_address": "127.0.0.1"}
    await api(client, "POST", f"{functions}/id/{FUNCTION_ID}/valves/update", root, valves)
    function = await api(client, "GET", f"{functions}/id/{FUNCTION_ID}", root)
    if not (function["is_active"] and function["is_global"] and function["type"] == "filter"):
        raise RuntimeError(f"filter not active and global: {function}")
    models = await api(client, "GET", f"{base}/api/models", tokens[0])
    if MODEL not in {m["id"] for m in models["data"]}:
        raise RuntimeError(f"Open WebUI does not list {MODEL}: {models}")
    return tokens


async def chat(
    client: aiohttp.ClientSession,
    base: str,
    token: str,
    user: str,
    phase: str,
    n: int,
    stream: bool,
) -> None:
    """One bare API chat (no chat_id) through Open WebUI, read to the end."""
    body = {
        "model": MODEL,
        "stream": stream,
        "messages": [{"role": "user", "content": f"{marker(user, phase, n)} Question {n}?"}],
    }
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base}/api/chat/completions"
    async with client.post(url, json=body, headers=headers, timeout=_timeout(CALL_TIMEOUT_S)) as r:
        text = await r.text()
        if r.status != 200 or '"error"' in text[:500]:
            raise RuntimeError(f"chat {user} {phase} {n}: {r.status} {text[:300]}")


async def measured(
    client: aiohttp.ClientSession, base: str, tokens: list[str], chats: int, rng: random.Random
) -> None:
    """All users at once, ``chats`` each, 0-1.5 s apart, each with its own token."""

    async def one_user(user: str, token: str, pauses: list[float], streams: list[bool]) -> None:
        for n in range(chats):
            await asyncio.sleep(pauses[n])
            await chat(client, base, token, user, "measured", n, streams[n])

    plans = [
        ([rng.uniform(0, 1.5) for _ in range(chats)], [rng.random() < 0.5 for _ in range(chats)])
        for _ in USERS
    ]
    async with asyncio.TaskGroup() as group:
        for user, token, (pauses, streams) in zip(USERS, tokens, plans, strict=True):
            group.create_task(one_user(user, token, pauses, streams))


def openwebui_env(data_dir: Path, openai_base: str, otlp_grpc: str | None) -> dict[str, str]:
    """Open WebUI's environment: offline, one OpenAI backend, traces only when asked."""
    drop = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    env = {
        k: v for k, v in os.environ.items() if k.lower() not in drop and not k.startswith("OTEL_")
    }
    env.update(
        DATA_DIR=str(data_dir),
        OFFLINE_MODE="true",
        HF_HUB_OFFLINE="1",
        RAG_EMBEDDING_MODEL_AUTO_UPDATE="false",
        BYPASS_MODEL_ACCESS_CONTROL="true",
        OPENAI_API_BASE_URL=openai_base,
        OPENAI_API_KEY="dummy",
        ENABLE_OLLAMA_API="false",
        WEBUI_SECRET_KEY=secrets.token_hex(24),
        NO_PROXY="127.0.0.1,localhost",
        ENABLE_OTEL="false",
    )
    if otlp_grpc is not None:
        env.update(
            ENABLE_OTEL="true",
            ENABLE_OTEL_TRACES="true",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{otlp_grpc}",
            OTEL_EXPORTER_OTLP_INSECURE="true",
        )
    return env


def _open_log(path: Path) -> IO[bytes]:
    """Open Open WebUI's log file for writing (sync helper)."""
    return path.open("wb")


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """A total timeout for one HTTP call."""
    return aiohttp.ClientTimeout(total=seconds)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
