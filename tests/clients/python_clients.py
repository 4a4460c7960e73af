"""Runs the PyPI LibreTranslate clients (libretranslatepy, libretranslate-aio sync and
async) against a gateway and prints what each call returned, as one JSON object;
tests/libretranslate_clients.rs asserts it. Usage: python python_clients.py BASE_URL
KO JA EN (three texts, in Korean, Japanese and English). A call that raises is
recorded as {"error": ..., "status": ...}, so the test sees every failure by name."""

import asyncio
import dataclasses
import json
import sys

from libretranslate_aio import AsyncLibreTranslate, LibreTranslate, LibreTranslateError
from libretranslatepy import LibreTranslateAPI

base, ko, ja, en = sys.argv[1:5]
out = {}


def plain(value):
    """Dataclasses (and lists of them) as JSON-ready values."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def record(name, call):
    try:
        out[name] = plain(call())
    except LibreTranslateError as e:
        out[name] = {"error": e.message, "status": e.status_code}
    except Exception as e:  # libretranslatepy raises urllib's errors
        out[name] = {"error": repr(e), "status": getattr(e, "code", None)}


# libretranslatepy: form bodies through urllib; a string at a time.
lt = LibreTranslateAPI(base)
record("py.translate", lambda: lt.translate(ko, "ko", "en", timeout=30))
record("py.translate_auto", lambda: lt.translate(ja, "auto", "en", timeout=30))
record("py.detect", lambda: lt.detect(en, timeout=30))
record("py.languages", lambda: lt.languages(timeout=30))

# libretranslate-aio, sync client (httpx): every endpoint it has.
with LibreTranslate(base, timeout=30) as c:
    record("aio.translate", lambda: c.translate(ko, "ko", "en"))
    record("aio.translate_alternatives", lambda: c.translate(ko, "ko", "en", alternatives=2))
    record("aio.translate_list", lambda: c.translate([ko, ko + " 2"], "ko", "en"))
    record("aio.translate_auto", lambda: c.translate(ja, "auto", "en"))
    record("aio.translate_auto_list", lambda: c.translate([ko, ja, en], "auto", "en"))
    record("aio.translate_unavailable", lambda: c.translate(ja, "auto", "ko"))
    record("aio.detect", lambda: c.detect(ja))
    record("aio.languages", c.languages)
    record("aio.frontend_settings", c.frontend_settings)
    record("aio.health", c.health)


# libretranslate-aio, async client: calls in flight together.
async def run_async():
    async with AsyncLibreTranslate(base, timeout=30) as c:
        results = await asyncio.gather(
            c.translate([ko, ja], "auto", "en"),
            c.detect(ko),
            c.health(),
            return_exceptions=True,
        )
    for name, result in zip(["translate_auto_list", "detect", "health"], results):
        if isinstance(result, LibreTranslateError):
            result = {"error": result.message, "status": result.status_code}
        elif isinstance(result, Exception):
            result = {"error": repr(result), "status": None}
        out["aio_async." + name] = plain(result)


asyncio.run(run_async())
print(json.dumps(out, ensure_ascii=False))
