"""The OpenAPI 3.1 document served at `/v1/openapi.json`, built from the pydantic models.

Schemas come from the same models the handlers validate with, so the document cannot drift
from the validation; `tests/receiver/test_openapi.py` checks that every route is documented and
that real answers validate against the documented responses.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from smsgw.services.receiver import models, reports_api
from smsgw.services.receiver.responses import json_response

_REF = "#/components/schemas/{model}"
_MODELS = (models.MessageIn, models.BatchIn, models.ErrorOut, models.AcceptedOut,
           models.BatchAcceptedOut, models.MessageOut, models.GenericInboundIn,
           models.InboundOut)


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _err(description: str, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": _json("ErrorOut")}
    if retry_after:
        out["headers"] = {"Retry-After": {"schema": {"type": "string"},
                                          "description": "Seconds to wait."}}
    return out


_UNAVAILABLE = _err("Over a queue watermark, or the database is unreachable: retry later.",
                    retry_after=True)
_NOT_ALLOWED = _err("Method not allowed.")
_SENDSMS_PARAMS = [
    {"name": n, "in": "query", "required": False, "schema": {"type": "string"},
     "description": d}
    for n, d in (("username", "Account name."), ("password", "One of the account's API keys."),
                 ("user", "Kannel's alias of `username`."),
                 ("pass", "Kannel's alias of `password`."),
                 ("from", "Sender id."), ("to", "Recipients, separated by spaces."),
                 ("text", "Message text (in `charset`); with coding=1 the octets themselves."),
                 ("charset", "Charset of `text`."),
                 ("coding", "0 7-bit, 1 8-bit, 2 UCS-2 (default: 1 with a udh, else 0)."),
                 ("udh", "User data header octets (URL-encoded), its length octet first."),
                 ("dlr-mask", "Kannel DLR mask 0-63; also whether the SMSC is asked for a "
                              "receipt."),
                 ("dlr-url", "DLR callback URL template with Kannel escapes."),
                 ("smsc", "Route hint."), ("priority", "0-3: SMPP priority_flag."),
                 ("validity", "Minutes from now."), ("deferred", "Minutes from now."),
                 ("mclass", "Message class 0-3 (0: flash)."),
                 ("mwi", "Message waiting indication 0-7."), ("pid", "SMPP protocol_id."),
                 ("alt-dcs", "1: the 0xFX data coding form."), ("rpi", "Reply path 0-2."),
                 ("binfo", "SMPP service_type (up to 5 characters)."),
                 ("meta-data", "Kannel meta-data: `?smpp?name=value&…` sets TLVs."),
                 ("account", "Kannel's account label (kept for dlr-url)."),
                 ("compress", "Only 0: compression is not supported."))]
_SENDSMS_RESPONSES = {
    "202": _text("`0: Accepted for delivery`"), "400": _text("Invalid parameter (named)."),
    "403": _text("Authorization failed for sendsms"), "413": _err("Body too large."),
    "415": _text("Unsupported content-type, rejected (Kannel's XML and HTML POSTs)."),
    "422": _text("A parameter Postgres cannot store (a NUL character: named)."),
    "429": _text("Account rate limit exceeded."),
    "503": _text("Temporal failure, try again later. (with Retry-After)"),
}
# Kannel's POST: the text as the body, the other parameters in X-Kannel-* headers
_X_KANNEL_PARAMS = [
    {"name": n, "in": "header", "required": False, "schema": {"type": "string"},
     "description": f"Kannel's POST: `{p}`."}
    for n, p in (("X-Kannel-Username", "username"), ("X-Kannel-Password", "password"),
                 ("X-Kannel-From", "from"), ("X-Kannel-To", "to"),
                 ("X-Kannel-Coding", "coding"), ("X-Kannel-DLR-Mask", "dlr-mask"),
                 ("X-Kannel-DLR-URL", "dlr-url"), ("X-Kannel-SMSC", "smsc"))]


def _paths() -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    return {
        "/v1/messages": {"post": {
            "summary": "Submit one MT message or a batch",
            "operationId": "postMessages", "security": bearer,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [{"$ref": "#/components/schemas/MessageIn"},
                          {"$ref": "#/components/schemas/BatchIn"}]}}}},
            "responses": {
                "202": {"description": "Stored (durably) and queued.",
                        "content": {"application/json": {"schema": {"oneOf": [
                            {"$ref": "#/components/schemas/AcceptedOut"},
                            {"$ref": "#/components/schemas/BatchAcceptedOut"}]}}}},
                "400": _err("Body is not JSON."), "401": _err("Missing or invalid API key."),
                "409": _err("client_ref reused with different content."),
                "413": _err("Body too large."), "422": _err("Invalid fields (each named)."),
                "429": _err("Account rate limit exceeded.", retry_after=True),
                "503": _UNAVAILABLE}}},
        "/v1/messages/{id}": {"get": {
            "summary": "One of the account's messages with its parts and receipts",
            "operationId": "getMessage", "security": bearer,
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The message.", "content": _json("MessageOut")},
                          "401": _err("Missing or invalid API key."),
                          "404": _err("No such message for this account."),
                          "422": _err("id is not a message id."), "503": _UNAVAILABLE}}},
        "/v1/openapi.json": {"get": {
            "summary": "This document", "operationId": "getOpenapi", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1 document.",
                                  "content": {"application/json": {
                                      "schema": {"type": "object"}}}}}}},
        "/v1/ping": {"get": {
            "summary": "Liveness of the API site", "operationId": "ping", "security": [],
            "responses": {"200": {"description": "Up.", "content": {"application/json": {
                "schema": {"type": "object"}}}}}}},
        "/cgi-bin/sendsms": {
            "get": {"summary": "Kannel-compatible sendsms", "operationId": "sendsmsGet",
                    "security": [], "parameters": _SENDSMS_PARAMS,
                    "responses": _SENDSMS_RESPONSES},
            "post": {"summary": "Kannel-compatible sendsms (form body, or Kannel's text body "
                                "with X-Kannel headers)",
                     "operationId": "sendsmsPost", "security": [],
                     "parameters": _SENDSMS_PARAMS + _X_KANNEL_PARAMS,
                     "requestBody": {"required": False, "content": {
                         "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                         "text/plain": {"schema": {"type": "string"}}}},
                     "responses": _SENDSMS_RESPONSES}},
        **_webhook_paths(),
        **reports_api.openapi_paths(),
    }


def _webhook_paths() -> dict[str, Any]:
    signed = {"401": _err("Signature missing or invalid; nothing stored."),
              "404": _err("Provider not configured."),
              "413": _err("Body too large."),
              "422": _err("A required field is missing or invalid."), "503": _UNAVAILABLE}
    twiml = {"200": {"description": "Stored; empty TwiML.",
                     "content": {"text/xml": {"schema": {"type": "string"}}}}, **signed}
    vonage = {"204": {"description": "Stored (or a reachability check)."},
              "400": _err("Body is not JSON."), **signed}
    form = {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}
    generic = {"200": {"description": "Stored (or a duplicate).", "content": _json("InboundOut")},
               **signed}
    gen_body = {"required": True, "content": _json("GenericInboundIn")}
    src = [{"name": "source", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "/v1/inbound/twilio": {
            "post": {"summary": "Twilio incoming message", "operationId": "twilioPost",
                     "security": [], "requestBody": {"required": False, "content": form},
                     "responses": twiml},
            "get": {"summary": "Twilio incoming message (GET)", "operationId": "twilioGet",
                    "security": [], "responses": twiml}},
        "/v1/inbound/vonage": {
            "get": {"summary": "Vonage SMS API inbound", "operationId": "vonageGet",
                    "security": [], "responses": vonage},
            "post": {"summary": "Vonage SMS API inbound (form or JSON)",
                     "operationId": "vonagePost", "security": [],
                     "requestBody": {"required": False, "content": {
                         **form, "application/json": {"schema": {"type": "object"}}}},
                     "responses": vonage}},
        "/v1/inbound/generic": {"post": {
            "summary": "Generic signed JSON MO (source from X-Smsgw-Source)",
            "operationId": "genericPost", "security": [], "requestBody": gen_body,
            "responses": generic}},
        "/v1/inbound/generic/{source}": {"post": {
            "summary": "Generic signed JSON MO", "operationId": "genericSourcePost",
            "security": [], "parameters": src, "requestBody": gen_body, "responses": generic}},
    }


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The whole OpenAPI document (built once)."""
    _, schemas = models_json_schema([(m, "validation") for m in _MODELS],
                                    ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "smsgw receiver API", "version": "1",
                 "description": "Submit MT messages, read their status, receive MO webhooks. "
                                "Every 2xx means the data is committed to the database."},
        "paths": _paths(),
        "components": {"schemas": schemas.get("$defs", {}),
                       "securitySchemes": {"bearerAuth": {"type": "http",
                                                          "scheme": "bearer"}}},
    }


async def get_openapi(_request: web.Request) -> web.StreamResponse:
    """Serve the OpenAPI document."""
    return json_response(document())


async def ping(_request: web.Request) -> web.StreamResponse:
    """Liveness of the API site."""
    return json_response({"ok": True})


def add_routes(app: web.Application) -> None:
    """Register `/v1/openapi.json` and `/v1/ping`."""
    app.router.add_get("/v1/openapi.json", get_openapi)
    app.router.add_get("/v1/ping", ping)
