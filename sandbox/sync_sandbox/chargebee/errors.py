"""Chargebee's refusals and their error JSON (the HTTP layer, `responses.py`, sends it)."""

from __future__ import annotations

#: The `type` Chargebee sends with each api_error_code; the SDK picks its exception by it.
ERROR_TYPES = {
    "resource_not_found": "invalid_request",
    "param_wrong_value": "invalid_request",
    "invalid_request": "invalid_request",
    "duplicate_entry": "invalid_request",
    "invalid_state_for_request": "invalid_request",
    "http_method_not_supported": "invalid_request",
    "api_request_limit_exceeded": "operation_failed",
    "internal_error": "operation_failed",
    "internal_temporary_error": "operation_failed",
}


class ChargebeeError(Exception):
    """A refusal: HTTP status, api_error_code, message and (when it is about one) the param.
    `error_code` is the finer legacy code (e.g. `param_required`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        *,
        error_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.error_code = error_code or code
        self.retry_after = retry_after

    def body(self) -> dict:
        message = f"{self.param} : {self.message}" if self.param else self.message
        body = {
            "message": message,
            "type": ERROR_TYPES.get(self.code),
            "api_error_code": self.code,
            "param": self.param,
            "error_code": self.error_code,
            "error_msg": message,
            "http_status_code": self.status,
        }
        return {key: value for key, value in body.items() if value is not None}


def not_found(kind: str, id_: str, param: str | None = None) -> ChargebeeError:
    return ChargebeeError(
        404, "resource_not_found", f"Sorry, we couldn't find that resource: {kind} {id_}", param
    )


def wrong_value(param: str, message: str) -> ChargebeeError:
    return ChargebeeError(400, "param_wrong_value", message, param)


def blank(param: str) -> ChargebeeError:
    return ChargebeeError(
        400, "invalid_request", "cannot be blank", param, error_code="param_required"
    )


def duplicate(param: str, value: str) -> ChargebeeError:
    return ChargebeeError(400, "duplicate_entry", f"The value {value} is already present.", param)


def invalid_state(message: str) -> ChargebeeError:
    return ChargebeeError(409, "invalid_state_for_request", message)
