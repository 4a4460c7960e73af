"""Runs the PyPI LibreTranslate clients against a gateway that requires API keys and
translates files, and prints what each call returned, as one JSON object;
tests/libretranslate_clients.rs asserts it. Usage: python python_files_keys.py
BASE_URL KEY FILE... (a valid key, then the files to translate from ko to en). A
call that raises is recorded as {"error": ..., "status": ...}."""

import asyncio
import base64
import dataclasses
import json
import sys
import urllib.request

from libretranslate_aio import AsyncLibreTranslate, LibreTranslate, LibreTranslateError
from libretranslatepy import LibreTranslateAPI

base, key, *files = sys.argv[1:]
out = {}


def plain(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


def record(name, call):
    try:
        out[name] = plain(call())
    except LibreTranslateError as e:
        out[name] = {"error": e.message, "status": e.status_code}
    except Exception as e:  # libretranslatepy raises urllib's errors
        out[name] = {"error": repr(e), "status": getattr(e, "code", None)}


def fetch(url):
    """The downloaded file, base64 (the URL is the gateway's own)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as r:
        return {
            "body": base64.b64encode(r.read()).decode(),
            "disposition": r.headers.get("Content-Disposition"),
        }


# libretranslatepy: api_key as a form field.
record("py.translate_key", lambda: LibreTranslateAPI(base, api_key=key).translate("안녕", "ko", "en", timeout=30))
record("py.translate_no_key", lambda: LibreTranslateAPI(base).translate("안녕", "ko", "en", timeout=30))
record("py.translate_bad_key", lambda: LibreTranslateAPI(base, api_key="wrong").translate("안녕", "ko", "en", timeout=30))

# libretranslate-aio (sync): settings, a keyed translation, files (multipart).
with LibreTranslate(base, api_key=key, timeout=30) as c:
    record("aio.frontend_settings", c.frontend_settings)
    record("aio.translate_key", lambda: c.translate("안녕", "ko", "en"))
    for path in files:
        name = path.rsplit("/", 1)[-1]
        record("aio.file." + name, lambda: c.translate_file(path, "ko", "en"))
        url = out["aio.file." + name].get("translated_file_url")
        if url:
            record("aio.download." + name, lambda: fetch(url))
with LibreTranslate(base, timeout=30) as c:
    record("aio.file_no_key", lambda: c.translate_file(files[0], "ko", "en"))
    record("aio.detect_no_key", lambda: c.detect("안녕하세요"))


async def run_async():
    async with AsyncLibreTranslate(base, api_key=key, timeout=30) as c:
        try:
            result = plain(await c.translate_file(files[0], "auto", "en"))
        except LibreTranslateError as e:
            result = {"error": e.message, "status": e.status_code}
    out["aio_async.file"] = result
    if "translated_file_url" in result:
        out["aio_async.download"] = fetch(result["translated_file_url"])


asyncio.run(run_async())
print(json.dumps(out, ensure_ascii=False))
