"""Handle each kind of failure. Every backend raises the same typed errors (one ``except``
catches a kind of failure from any of them), with plain-data fields to act on, and each
pickles intact across processes.

    python examples/07_errors.py

Offline: a scripted model plays each failure the way the real service sends it.
Failures that retrying cannot fix are raised; transient ones that outlast the retries come
back as a failed result with the error in ``result.error``.
"""

import pickle

from chia_async import errors
from chia_async.backends.claude import ClaudeCodeLLM
from chia_async.backends.openai_providers import OpenAILLM
from chia_async.base import LLMCallBase
from chia_async.testing import Fault, ScriptedModelServer, Turn

FAILURES = {
    "rate limit, resets in 1 h": Turn(fault=Fault.http(429, retry_after=3600)),
    "bad API key": Turn(fault=Fault.http(401)),
    "quota exhausted": Turn(fault=Fault.http(429, "billing")),
    "prompt too long": Turn(fault=Fault.http(400, "context_length")),
    "malformed request": Turn(fault=Fault.http(400)),
    "server down": Turn(fault=Fault.http(500)),
    "cut at max tokens": Turn(text="The answer is cut", stop="max_tokens"),
    "content filtered": Turn(stop="content_filter"),
    "model goes silent": Turn(fault=Fault(kind="stall")),
}


def explain(error: errors.ChiaError) -> str:
    """What a program would read from each kind of error."""
    match error:
        case errors.RateLimitError():
            return f"RateLimitError: wait until {error.reset_time:%H:%M:%S} UTC"
        case errors.AuthenticationError():
            return f"AuthenticationError: check the key (HTTP {error.status_code})"
        case errors.BillingError():
            return f"BillingError: top up the account (HTTP {error.status_code})"
        case errors.ContextLengthExceededError():
            return "ContextLengthExceededError: shorten the prompt"
        case errors.InvalidRequestError():
            return f"InvalidRequestError: fix the request ({error.raw_message})"
        case errors.ServerError():
            return f"ServerError: the service failed (HTTP {error.status_code}); try later"
        case errors.MaxOutputTokensError():
            return f"MaxOutputTokensError: partial_text={error.partial_text!r}"
        case errors.ContentBlockedError():
            return f"ContentBlockedError: block_reason={error.block_reason!r}"
        case errors.TimeoutError():
            return f"{type(error).__name__}: {error.raw_message}"
        case errors.CLINotFoundError():
            return f"CLINotFoundError: install it with {error.install_command!r}"
    return f"{type(error).__name__}: {error}"


def call(llm: LLMCallBase) -> str:
    try:
        result = llm.prompt("Say hi.")
    except errors.ChiaError as error:  # not fixable by retrying: raised
        travelled = pickle.loads(pickle.dumps(error))  # as from a Ray worker: intact
        return "raised   " + explain(travelled)
    if result.error is not None:  # transient, and still failing after the retries
        return "returned " + explain(result.error)
    return f"ok: {result.result}"


def main() -> None:
    with ScriptedModelServer() as server:
        for name, turn in FAILURES.items():
            script = name.replace(" ", "-").replace(",", "")
            server.script(script, [turn], repeat=True)
            llm = OpenAILLM(
                "gpt-5-mini",
                base_url=f"{server.base_url(script)}/v1",
                api_key="offline",
                retries=1,
                idle_timeout_seconds=1.0,
            )
            print(f"{name:<26} {call(llm)}")
    missing = ClaudeCodeLLM(cli_path="/nonexistent/claude")
    print(f"{'CLI not installed':<26} {call(missing)}")


if __name__ == "__main__":
    main()
