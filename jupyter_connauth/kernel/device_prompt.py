"""How a device-code consent (RFC 8628) is shown: the code and where to enter it.

The user code is meant to be shown (it is worthless without the device code, which
stays in the broker) and the verification URI is the IdP's; neither is a live secret,
so the balloon may stay in the saved notebook. While the cell waits the text updates
like the Authorize balloon's.
"""

from __future__ import annotations

import html

from .client import DeviceCode

_STYLE = (
    "border:1px solid #1a73e8;background:#e8f0fe;border-radius:6px;padding:8px 12px;"
    "max-width:46em;font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;"
)
_CODE = "font-size:20px;font-weight:700;letter-spacing:2px;font-family:monospace;"


def device_text(consent: DeviceCode, idp: str) -> str:
    lines = [
        f"Authorize {consent.connection} at {idp}: consent is needed because "
        f"{consent.reason_text}.",
        f"On any device, open {consent.verification_uri}",
        f"and enter the code: {consent.user_code}",
    ]
    if consent.verification_uri_complete:
        lines.append(f"(or open {consent.verification_uri_complete})")
    return "\n".join(lines) + "\n"


def device_html(consent: DeviceCode, idp: str, status: str) -> str:
    uri = html.escape(consent.verification_uri, quote=True)
    complete = ""
    if consent.verification_uri_complete:
        link = html.escape(consent.verification_uri_complete, quote=True)
        complete = (
            f' (or <a href="{link}" target="_blank" rel="noopener">open it with the code '
            "filled in</a>)"
        )
    return (
        f'<div style="{_STYLE}" class="connauth-balloon connauth-device" '
        f'data-flow="{html.escape(consent.flow_id)}">'
        f"<b>Authorize {html.escape(consent.connection)}</b> at {html.escape(idp)}<br>"
        f"Consent is needed because {html.escape(consent.reason_text)}.<br>"
        f'On any device, open <a href="{uri}" target="_blank" rel="noopener">{uri}</a>'
        f"{complete} and enter the code<br>"
        f'<span class="connauth-user-code" style="{_CODE}">'
        f"{html.escape(consent.user_code)}</span><br>"
        f'<span class="connauth-status">{html.escape(status)}</span></div>'
    )
