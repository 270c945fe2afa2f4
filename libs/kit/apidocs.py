"""The documentation the gateway serves (issue 14, ADR 0012): one OpenAPI 3.1 document merged
from the six services' own (each completed by libs/kit/app.py: bearer scheme, problem+json
answers), the AsyncAPI 3.0 event catalog generated from libs/events, each event's JSON Schema
(the CloudEvents `dataschema`), and two pages. `backroom apidocs --out DIR` writes them as files;
nginx serves DIR (deploy/local/nginx, deploy/compose, deploy/k8s)."""

import copy
import html
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from libs.events import topics
from libs.events.envelope import CONTENT_TYPE, SCHEMA_PATH_PREFIX, CloudEvent, schema_path
from libs.events.registry import EVENT_TYPES
from libs.kit.app import BEARER_SCHEME, PROBLEM_SCHEMA

# The gateway's prefixes (deploy/local/nginx/nginx.conf.tmpl) and the service behind each.
GATEWAY_PREFIXES = {
    "/catalog": "catalog",
    "/inventory": "inventory",
    "/pricing": "pricing",
    "/orders": "orders",
    "/carts": "orders",
    "/payments": "payments",
    "/notifications": "notifications",
}
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
KAFKA_CONTENT_TYPE = "application/cloudevents+json"
SWAGGER_ASSETS = (
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-ui.css",
    "favicon-32x32.png",
    "favicon-16x16.png",
)


def public_path(path: str) -> bool:
    """A path the gateway routes to a service (not /health/*, /metrics: the services' own)."""
    return any(path == p or path.startswith(p + "/") for p in GATEWAY_PREFIXES)


def _walk_refs(node: Any, rename: dict[str, str], prefix: str) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(prefix):
                name = value[len(prefix) :]
                out[key] = prefix + rename.get(name, name)
            else:
                out[key] = _walk_refs(value, rename, prefix)
        return out
    if isinstance(node, list):
        return [_walk_refs(v, rename, prefix) for v in node]
    return node


def merge_openapi(service_docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One document for every public route of the services (name -> its own /openapi.json), under
    the paths the gateway serves them at. Component schemas that two services define differently
    are renamed `<Service><Name>` in the second; operationIds become `<service>_<name>`."""
    ref_prefix = "#/components/schemas/"
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    security_schemes: dict[str, Any] = {}
    operation_ids: set[str] = set()
    tags = []
    for service, original in service_docs.items():
        doc = copy.deepcopy(original)
        own = doc.get("components", {}).get("schemas", {})
        rename = {
            name: f"{service.capitalize()}{name}"
            for name, schema in own.items()
            if name in schemas and schemas[name] != schema
        }
        doc = _walk_refs(doc, rename, ref_prefix)
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            schemas[rename.get(name, name)] = schema
        security_schemes |= doc.get("components", {}).get("securitySchemes", {})
        tags.append({"name": service, "description": f"the {service} service"})
        for path, item in doc.get("paths", {}).items():
            if not public_path(path):
                continue
            for method, operation in item.items():
                operation["tags"] = [service]
                wanted = f"{service}_{operation.get('operationId', method + path)}"
                op_id, n = wanted, 2
                while op_id in operation_ids:
                    op_id, n = f"{wanted}_{n}", n + 1
                operation_ids.add(op_id)
                operation["operationId"] = op_id
            paths[path] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Backroom API",
            "version": "1",
            "description": (
                "Every public route of the six Backroom services, as the gateway serves them. "
                "Errors are RFC 9457 problem details (`application/problem+json`). Events: "
                "[/asyncapi.json](/asyncapi.json), page [/asyncapi](/asyncapi)."
            ),
        },
        "servers": [{"url": "/", "description": "the gateway"}],
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": security_schemes,
        },
    }


# --- the event catalog ---------------------------------------------------------------------------

_TOPIC_TEXT = {
    topics.CATALOG: ("catalog", "Products and sales channels (key: sku or channel code)."),
    topics.PRICING: ("pricing", "Base and channel prices (key: sku)."),
    topics.INVENTORY: (
        "inventory",
        "Stock, reservations, backorders, purchase orders (key: sku, order id or purchase order id).",
    ),
    topics.ORDERS: (
        "orders",
        "Orders, carts, shipments, returns, credit notes (key: order or cart id).",
    ),
    topics.PAYMENTS: ("payments", "Payments and refunds (key: order id)."),
    topics.NOTIFICATIONS: ("notifications", "Notifications sent (key: order id)."),
    topics.PAYMENT_INSTRUCTIONS: (
        "paymentInstructions",
        "RESTRICTED: payment tokens from orders to payments only, short retention (key: order id).",
    ),
}
LISTINGS_CHANNEL = "listings"
LISTINGS_TYPES = ("ListingChanged",)


def event_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of one event type's `data`, self-contained (`dataschema` points here)."""
    model = EVENT_TYPES[event_type][1]
    schema = model.model_json_schema()
    return {"$schema": SCHEMA_DIALECT, "$id": schema_path(event_type), **schema}


def _hoist(model: type[BaseModel], schemas: dict[str, Any], event_type: str) -> dict[str, Any]:
    """The model's schema with its definitions moved into `schemas` (components); definitions
    another event defines differently are named `<EventType>.<Name>`."""
    template = "#/components/schemas/{model}"
    schema = model.model_json_schema(ref_template=template)
    defs = schema.pop("$defs", {})
    if any(name in schemas and schemas[name] != d for name, d in defs.items()):
        template = "#/components/schemas/" + event_type + ".{model}"
        schema = model.model_json_schema(ref_template=template)
        defs = {f"{event_type}.{k}": v for k, v in schema.pop("$defs", {}).items()}
    schemas.update(defs)
    return schema


def _envelope_schema() -> dict[str, Any]:
    schema = CloudEvent.model_json_schema()
    schema.pop("title", None)
    return schema


def _channel_of(event_type: str) -> str:
    if event_type in LISTINGS_TYPES:
        return LISTINGS_CHANNEL
    return _TOPIC_TEXT[EVENT_TYPES[event_type][0]][0]


def asyncapi_document() -> dict[str, Any]:
    """AsyncAPI 3.0: a channel per topic (and its dead-letter topic), a message per event type:
    the CloudEvents envelope with the type's data schema, the Kafka key and headers."""
    schemas: dict[str, Any] = {"CloudEventEnvelope": _envelope_schema()}
    schemas["KafkaHeaders"] = {
        "type": "object",
        "description": "Kafka headers mirroring the envelope (libs/kit/kafka.py ce_headers).",
        "properties": {
            "ce_id": {"type": "string", "description": "the CloudEvent id"},
            "ce_type": {"type": "string", "description": "the CloudEvent type"},
            "content-type": {"type": "string", "const": KAFKA_CONTENT_TYPE},
            # Issue 14: set while tracing is on (libs/kit/tracing.py), as the envelope's own.
            "traceparent": {"type": "string", "description": "W3C trace context (tracing on)"},
            "tracestate": {"type": "string", "description": "W3C tracestate (tracing on)"},
        },
        "required": ["ce_id", "ce_type", "content-type"],
    }
    messages: dict[str, Any] = {}
    by_channel: dict[str, list[str]] = {}
    for event_type, (_topic, model) in sorted(EVENT_TYPES.items()):
        data_name = f"{event_type}Data"
        data = _hoist(model, schemas, event_type)
        schemas[data_name] = data
        messages[event_type] = {
            "name": event_type,
            "title": event_type,
            "summary": (model.__doc__ or event_type).strip().splitlines()[0],
            "contentType": KAFKA_CONTENT_TYPE,
            "headers": {"$ref": "#/components/schemas/KafkaHeaders"},
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEventEnvelope"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": event_type},
                            "datacontenttype": {"const": CONTENT_TYPE},
                            "dataschema": {"const": schema_path(event_type)},
                            "data": {"$ref": f"#/components/schemas/{data_name}"},
                        },
                    },
                ]
            },
            "bindings": {
                "kafka": {
                    "key": {
                        "type": "string",
                        "description": "the aggregate id, equal to the CloudEvent `subject`: "
                        "every event of one aggregate stays in order on one partition",
                    },
                    "bindingVersion": "0.5.0",
                }
            },
            "externalDocs": {"url": schema_path(event_type), "description": "data JSON Schema"},
        }
        by_channel.setdefault(_channel_of(event_type), []).append(event_type)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic, (name, text) in _TOPIC_TEXT.items():
        channels[name] = _channel(topic, text, by_channel.get(name, []))
    channels[LISTINGS_CHANNEL] = _channel(
        topics.LISTINGS_PREFIX + "{channel}",
        "One sales channel's listing updates (key: sku): a marketplace's principal may read its"
        " channel's topic only.",
        by_channel.get(LISTINGS_CHANNEL, []),
    )
    channels[LISTINGS_CHANNEL]["parameters"] = {
        "channel": {"description": "the sales channel's code"}
    }
    for name in list(channels):
        base = channels[name]
        dead = f"{name}DeadLetters"
        channels[dead] = {
            "address": topics.dlq(base["address"]),
            "description": f"Dead letters of {base['address']}: messages a consumer group could "
            "not handle, with the failure in their headers (`backroom dlq`).",
            "messages": copy.deepcopy(base["messages"]),
        }
        if "parameters" in base:
            channels[dead]["parameters"] = copy.deepcopy(base["parameters"])
    for name, channel in channels.items():
        operations[f"publish_{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"the owning service publishes to {channel['address']}",
            "messages": [{"$ref": f"#/channels/{name}/messages/{m}"} for m in channel["messages"]],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Backroom events",
            "version": "1",
            "description": (
                "Every event Backroom publishes: CloudEvents 1.0 in structured JSON mode on Kafka, "
                "one topic per owning service, key = aggregate id (= `subject`). Changes are "
                "additive; a breaking change is a new type name. Each event's `dataschema` is the "
                f"gateway path of its data schema ({SCHEMA_PATH_PREFIX}<type>.json)."
            ),
        },
        "defaultContentType": KAFKA_CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "the cluster's bootstrap servers (BACKROOM_KAFKA_BOOTSTRAP); "
                "clients authenticate (`backroom kafka-config --principal subscriber`)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _channel(address: str, text: str, types: list[str]) -> dict[str, Any]:
    return {
        "address": address,
        "description": text,
        "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in types},
    }


# --- pages ---------------------------------------------------------------------------------------

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Backroom API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
<script>
// The document is OpenAPI 3.1; the Swagger UI that swagger-ui-bundle ships (4.x) renders 3.0:
// it is shown as 3.0 (ADR 0012). Clients and tools should read /openapi.json itself.
fetch("/openapi.json").then(function (r) { return r.json(); }).then(function (spec) {
  spec.openapi = "3.0.3";
  window.ui = SwaggerUIBundle({
    spec: spec,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout",
    deepLinking: true
  });
});
</script>
<p><a href="/openapi.json">/openapi.json</a> · <a href="/asyncapi">events</a></p>
</body>
</html>
"""


def asyncapi_page(doc: dict[str, Any]) -> str:
    """A plain HTML render of the event catalog (no script, no CDN)."""
    e = html.escape
    messages = doc["components"]["messages"]
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Backroom events</title>',
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
        "code,pre{background:#f4f4f4}pre{padding:.5em;overflow:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;"
        "text-align:left}</style></head><body>",
        f"<h1>{e(doc['info']['title'])}</h1><p>{e(doc['info']['description'])}</p>",
        '<p><a href="/asyncapi.json">/asyncapi.json</a> (AsyncAPI 3.0) · '
        '<a href="/docs">HTTP API</a></p>',
        "<h2>Kafka headers</h2><table><tr><th>header</th><th>meaning</th></tr>",
    ]
    for name, spec in doc["components"]["schemas"]["KafkaHeaders"]["properties"].items():
        out.append(
            f"<tr><td><code>{e(name)}</code></td>"
            f"<td>{e(spec.get('description', spec.get('const', '')))}</td></tr>"
        )
    out.append("</table><h2>Topics</h2>")
    for name, channel in doc["channels"].items():
        out.append(f'<h3 id="{e(name)}"><code>{e(channel["address"])}</code></h3>')
        out.append(f"<p>{e(channel['description'])}</p><ul>")
        for message in channel["messages"]:
            out.append(f'<li><a href="#event-{e(message)}">{e(message)}</a></li>')
        out.append("</ul>")
    out.append("<h2>Events</h2>")
    for name, message in messages.items():
        schema = doc["components"]["schemas"][f"{name}Data"]
        out.append(f'<h3 id="event-{e(name)}">{e(name)}</h3><p>{e(message["summary"])}</p>')
        out.append(
            f"<p>key: the aggregate id (= <code>subject</code>) · data schema: "
            f'<a href="{e(schema_path(name))}"><code>{e(schema_path(name))}</code></a></p>'
        )
        out.append(f"<pre>{e(json.dumps(schema, indent=2))}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --- the site ------------------------------------------------------------------------------------


def site_files(service_docs: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(relative path, text) of every generated file but the Swagger UI assets."""
    openapi = merge_openapi(service_docs)
    asyncapi = asyncapi_document()
    yield "openapi.json", json.dumps(openapi, indent=2) + "\n"
    yield "asyncapi.json", json.dumps(asyncapi, indent=2) + "\n"
    yield "asyncapi.html", asyncapi_page(asyncapi)
    yield "docs/index.html", DOCS_PAGE
    for event_type in sorted(EVENT_TYPES):
        yield (
            f"{SCHEMA_PATH_PREFIX.strip('/')}/{event_type}.json",
            json.dumps(event_schema(event_type), indent=2) + "\n",
        )


def write_site(out: Path, service_docs: dict[str, dict[str, Any]]) -> list[Path]:
    """Write the documents, pages, schemas and the Swagger UI assets (from the swagger-ui-bundle
    package: no CDN) under `out`; returns the files written."""
    import swagger_ui_bundle

    written = []
    for relative, text in site_files(service_docs):
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    assets = out / "docs" / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    for name in SWAGGER_ASSETS:
        shutil.copyfile(Path(swagger_ui_bundle.swagger_ui_path) / name, assets / name)
        written.append(assets / name)
    return written


__all__ = [
    "BEARER_SCHEME",
    "GATEWAY_PREFIXES",
    "PROBLEM_SCHEMA",
    "asyncapi_document",
    "event_schema",
    "merge_openapi",
    "write_site",
]
