"""The one exception type users see: caught once in the CLI and printed as one line."""


class ExplainError(Exception):
    """A problem the user can fix (bad config, missing file, unknown layer...).

    The message names the file and the field or key involved; the CLI prints it
    as a single line and exits with code 2.
    """
