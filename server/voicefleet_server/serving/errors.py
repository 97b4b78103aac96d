"""Domain errors of the serving layer; the API maps each to one HTTP answer."""

from __future__ import annotations


class ServingError(Exception):
    """Base: carries an OpenAI error `type`, a stable `code` and the HTTP status."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidInput(ServingError):
    pass


class UnsupportedCharacters(ServingError):
    """The input is mostly characters outside the model's vocabulary (another script,
    another language's alphabet); the message names them."""

    code = "unsupported_characters"


class UnknownModel(ServingError):
    status = 404
    code = "model_not_found"


class UnknownVoice(ServingError):
    code = "voice_not_found"


class UnsupportedFormat(ServingError):
    code = "unsupported_response_format"


class Overloaded(ServingError):
    status = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(ServingError):
    status = 503
    type = "server_error"
    code = "unavailable"

    def __init__(self, message: str, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageUnavailable(Unavailable):
    """The job's object storage (S3) did not answer within the retry budget."""

    code = "storage_unavailable"


class SynthesisFailed(ServingError):
    status = 500
    type = "server_error"
    code = "synthesis_failed"


class SynthesisTimedOut(ServingError):
    """The model call holding this request ran past --batch-timeout-s."""

    status = 504
    type = "server_error"
    code = "synthesis_timeout"


class InputTooLarge(ServingError):
    status = 413
    code = "input_too_large"


class NotFound(ServingError):
    status = 404
    code = "not_found"


class NotReady(ServingError):
    """The resource exists but is not available yet (a chunk still rendering)."""

    status = 409
    code = "not_ready"


class RateLimited(ServingError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidAudio(ServingError):
    """An uploaded reference clip is not usable audio (unreadable, silent, too long)."""

    status = 422
    code = "invalid_audio"


class VoiceCloningUnsupported(ServingError):
    """The loaded model family cannot take voices from reference audio."""

    code = "voice_cloning_unsupported"


class ContentPolicyViolation(ServingError):
    """The input contains a term of --blocked-terms-file (never named in the message)."""

    code = "content_policy_violation"

    def __init__(self, param: str = "input") -> None:
        super().__init__("the input was refused by this server's content policy", param=param)


class TimestampsUnsupported(ServingError):
    """Word timestamps were asked of a model, format or stream that cannot give them."""

    code = "timestamps_unsupported"

    def __init__(self, message: str, *, param: str = "timestamps") -> None:
        super().__init__(message, param=param)
