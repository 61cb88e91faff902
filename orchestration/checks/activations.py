"""Reference checks of `activations:` (what they send, where, how it is named) and of the
workflow's archive connection."""


from assets import spec
from assets.sealing import MAIL_SAMPLE
from orchestration.checks.common import Context
from orchestration.spec_problems import Path_, Problem

SOURCE = {"source_name": "file.csv"}  # a sample forwarded file's name, for templates


def check_activations(ctx: Context) -> list[Problem]:
    """Activations: something to send, destinations that can receive files, templates that
    render."""
    problems: list[Problem] = []
    for name, activation in ctx.sections["activations"].items():
        path = ("activations", name)
        problems += _source(ctx, path, activation) + destination_problems(ctx, path, activation)
        problems += _templates(ctx, path, activation)
    return problems


def _source(ctx: Context, path: Path_, activation: spec.Activation) -> list[Problem]:
    """Exactly one of a query (a written file) or a courier (its files forwarded)."""
    problems: list[Problem] = []
    if bool(activation.query) == bool(activation.courier):
        problems.append(Problem(path, "give exactly one of `query:` (deliver its result as a "
                                      "file) or `courier:` (forward its files)"))
    if activation.query:
        problems += ctx.unknown("queries", activation.query, (*path, "query"), "query")
        if not activation.file.name:
            problems.append(Problem((*path, "file", "name"), "is required when delivering a "
                                                             "query (e.g. partner_{{ ds_nodash "
                                                             "}}.csv)"))
    if activation.courier:
        missing = ctx.unknown("couriers", activation.courier, (*path, "courier"), "courier")
        problems += missing
        if not missing and not activation.query:
            problems += _forwarding(ctx, path, activation)
    return problems


def destination_problems(ctx: Context, path: Path_,
                         activation: spec.Activation | spec.DeliverStep) -> list[Problem]:
    """Known connections that receive files, each once; `mail:` exactly when one is mail
    (an activation's and a deliver step's `to:` follow the same rules)."""
    problems: list[Problem] = []
    to_path = (*path, "to")
    mails, all_known = False, True
    receivers = spec.kinds_of(spec.Destination)
    for i, target in enumerate(activation.destinations):
        where = to_path if isinstance(activation.to, str) else (*to_path, i)
        if missing := ctx.unknown("connections", target, where, "connection"):
            problems += missing
            all_known = False
            continue
        kind = ctx.kind(target)
        if kind is not None and kind not in receivers:
            problems.append(Problem(where, f"a `{kind}` connection cannot receive files; use a "
                                           f"{', '.join(receivers[:-1])} or {receivers[-1]} "
                                           "connection"))
        mails |= kind == "smtp"
    if mails and activation.mail is None:
        problems.append(Problem(path, "an `smtp` destination needs `mail:` with at least `to:` "
                                      "(the recipients)"))
    if activation.mail is not None and not mails and all_known:
        problems.append(Problem((*path, "mail"), "`mail:` is set but no destination is an "
                                                 "`smtp` connection"))
    if len(set(activation.destinations)) != len(activation.destinations):
        problems.append(Problem(to_path, "a destination is listed twice"))
    return problems


def _templates(ctx: Context, path: Path_, activation: spec.Activation) -> list[Problem]:
    extra = SOURCE if activation.courier else None
    problems = ctx.template(activation.path, (*path, "path"))
    problems += ctx.template(activation.file.name, (*path, "file", "name"), extra=extra)
    problems += ctx.template(activation.seal.zip_name, (*path, "seal", "zip_name"),
                             extra=SOURCE)
    if activation.mail is not None:
        for key in ("subject", "body"):
            problems += ctx.template(getattr(activation.mail, key), (*path, "mail", key),
                                     extra=MAIL_SAMPLE)
    return problems


def _forwarding(ctx: Context, path: Path_, activation: spec.Activation) -> list[Problem]:
    """Forwarded files go as they arrived: only their name (and sealing) can change."""
    problems: list[Problem] = []
    ignored = sorted(activation.file.model_fields_set - {"name"})
    if ignored:
        problems.append(Problem((*path, "file"), f"{', '.join(ignored)}: forwarded files are "
                                                 "sent as they arrived; only `file.name` "
                                                 "applies"))
    courier = ctx.sections["couriers"].get(activation.courier or "")
    several = courier is not None and any(c in (courier.path or "") for c in "*?[")
    for where, template in (((*path, "file", "name"), activation.file.name),
                            ((*path, "seal", "zip_name"), activation.seal.zip_name)):
        if several and template and "source_name" not in template:
            problems.append(Problem(where, f"courier `{activation.courier}` may bring several "
                                           "files, which would all get this one name: use "
                                           "{{ source_name }} in it, or leave it out to keep "
                                           "their names"))
    return problems


def check_archive(ctx: Context) -> list[Problem]:
    """The archive keeps every delivered file: a folder or s3 connection."""
    if ctx.info is None or ctx.info.archive is None:
        return []
    path = ("workflow", "archive")
    if missing := ctx.unknown("connections", ctx.info.archive, path, "connection"):
        return missing
    kind = ctx.kind(ctx.info.archive)
    if kind not in ("folder", "s3", None):
        return [Problem(path, f"the archive must be a folder or s3 connection, not {kind}")]
    return []
