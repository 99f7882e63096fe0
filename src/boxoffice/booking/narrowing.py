"""One final answer per command of a failed batch, so one bad command fails alone.

A batch transaction that fails before committing has written nothing. If the
database is unavailable, every command of the batch gets that 503: trying
them one by one would only hammer it. Any other failure (an integrity error,
a bug triggered by one command) is narrowed down by trying each command again
in a transaction of its own, so only the faulty one fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog

from boxoffice.db.errors import DatabaseUnavailable
from boxoffice.domain.commands import Command
from boxoffice.domain.decisions import Outcome

log = structlog.get_logger("boxoffice.booking")

# One command's final answer: its outcome, or the failure that kept it from being written.
Answer = Outcome | Exception
Apply = Callable[[Sequence[Command]], Awaitable[Sequence[Outcome]]]


async def answer_each(apply: Apply, commands: Sequence[Command]) -> list[Answer]:
    """`apply(commands)`'s outcomes, or each command's own failure; never raises.

    `apply` must raise only when nothing of `commands` was committed.
    """
    try:
        return list(await apply(commands))
    except DatabaseUnavailable as error:
        return [error] * len(commands)
    except Exception as error:
        if len(commands) == 1:
            return [error]
        log.warning("batch_failed_retrying_one_by_one", size=len(commands), error=repr(error))
        answers: list[Answer] = []
        for command in commands:
            answers.extend(await answer_each(apply, [command]))
        return answers
