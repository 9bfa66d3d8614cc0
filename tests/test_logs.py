"""The scripts' logging: the HTTP libraries stay quiet at INFO (one line per judge request otherwise)."""

import logging

from rubric_rft.logs import HTTP_LOGGERS, setup_logging


def test_http_libraries_log_warnings_only_and_never_below_the_chosen_level():
    try:
        setup_logging()
        assert all(logging.getLogger(name).getEffectiveLevel() == logging.WARNING for name in HTTP_LOGGERS)
        setup_logging(logging.ERROR)
        assert not logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    finally:
        for name in HTTP_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
