"""The hub's side of quick replies (docs/talk.md): a browser's signed ``reply_put`` and the
audio it recorded, relayed to the doorbell as the signed command sealed to the device key and
then the audio in sealed parts (protocol/reply.py). The broker sees ciphertext only."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.owner.hub.app import HUB, refuse
from doorstep.protocol.reply import MAX_REPLY, parts_of, seal_part
from doorstep.protocol.wire import MAX_SIGNAL

MAX_UPLOAD = MAX_SIGNAL + MAX_REPLY * 4 // 3 + 1024     # the command and the base64 audio
ANSWER_SECONDS = 60.0        # the doorbell answers once every part is in and checked


async def put_reply(request: web.Request) -> web.Response:
    """``{"command": <the signed reply_put>, "audio": <base64>}``; answers with the
    doorbell's signed answer, as ``/command`` does. The size is checked before the body is
    read."""
    hub = request.app[HUB]
    device = request.match_info["device"]
    if request.content_length is None or request.content_length > MAX_UPLOAD:
        return refuse(413, f"upload too large: a reply is at most {MAX_REPLY} bytes of audio")
    if hub.relay is None:
        return refuse(503, "the hub has no broker connection")
    try:
        doc = json.loads(await request.read())
        signed = str(doc["command"]).encode()
        audio = base64.b64decode(str(doc["audio"]), validate=True)
        body = json.loads(signed)["body"]
        counter = int(body["counter"])
        params = body["params"]
        if body["device"] != device or body["action"] != "reply_put":
            raise ValueError("not a reply_put for this doorbell")
        if int(params["size"]) != len(audio) or \
                params["sha256"] != hashlib.sha256(audio).hexdigest():
            raise ValueError("the audio does not have the size and SHA-256 signed")
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
        return refuse(400, f"not a signed reply for {device}: {exc}")
    if len(audio) > MAX_REPLY:
        return refuse(413, f"a reply is at most {MAX_REPLY} bytes of audio")

    def parts(public: Ed25519PublicKey) -> list[bytes]:
        return [seal_part(counter, off, data, public) for off, data in parts_of(audio)]

    answer = await hub.relay.command(device, signed, counter, ANSWER_SECONDS, then=parts)
    if answer is None:
        return refuse(504, f"{device} did not answer: it may be offline")
    return web.json_response({"ack": answer.decode()})
