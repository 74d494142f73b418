from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class HMACDeviceAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "ea_gateway.api.authentication.HMACDeviceAuthentication"
    name = "deviceHmac"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-Device-Key",
            "description": (
                "Every request also carries X-Timestamp (unix seconds), X-Nonce (16-64 of [A-Za-z0-9_-], "
                "never reused) and X-Signature = hex HMAC-SHA256(secret, METHOD\\nPATH\\nCANONICAL_QUERY\\n"
                "TIMESTAMP\\nNONCE\\nSHA256_HEX(body)). See docs/ea-protocol.md."
            ),
        }
