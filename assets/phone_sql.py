"""Phone numbers read in SQL by phonenumbers' own metadata, so a 20 M-row load does not call
Python once per number.

phonenumbers (Google's libphonenumber) reads a number in three steps, each driven by its
metadata: the calling code (after `+` or an international prefix, else the region's, also
when the digits start with it), the national prefix (`0` in France; none in Italy, where the
0 is part of the number), then validity (the region's possible lengths and general pattern,
and one of its number types'; a calling code several regions share is settled in
phonenumbers' region order, by a region's leading digits where it has some and by its
patterns otherwise). Each step is written here as SQL over the number's digits, for the
regions of `SQL_REGIONS` and a column's own region. What these rules do not settle (another
calling code, an international prefix other than `00`, a national prefix with a transform
rule) is left to phonenumbers itself, the tag's UDF; the tests hold both to its answers.
"""

import functools
import re
from collections.abc import Callable

import phonenumbers
from phonenumbers import PhoneMetadata

NANP = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]  # the regions of +1; US is tried first
NUMBER_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager",
                "uan", "voicemail", "fixed_line", "mobile")
MIN_NSN, MAX_NSN = 2, 17  # phonenumbers' bounds on a national significant number (a test
# holds them to its private _MIN_LENGTH_FOR_NSN and _MAX_LENGTH_FOR_NSN)
# Regions (beside North America, which `nanp_sql` reads) whose numbers are read in SQL in
# every column; a column's `default_region` is read in SQL too. The others go to phonenumbers
# per distinct value: correct, but about 40 µs a new number.
SQL_REGIONS = ("GB", "FR", "DE", "IT", "ES", "NL", "BE", "CH", "AT", "DK", "SE", "NO", "FI",
               "IE", "PT", "PL", "CZ", "GR", "HU", "RO", "LU", "AU", "NZ", "JP", "CN", "KR",
               "IN", "SG", "HK", "IL", "AE", "TR", "ZA", "BR", "MX", "RU")


def literal(text: str) -> str:
    """A SQL string literal (quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def metadata(region: str) -> PhoneMetadata:
    """The metadata phonenumbers holds for a region (it must hold some)."""
    found = PhoneMetadata.metadata_for_region(region)
    if found is None or found.general_desc is None:
        raise ValueError(f"phonenumbers has no metadata for region {region!r}")
    return found


def general(meta: PhoneMetadata) -> phonenumbers.PhoneNumberDesc:
    """The region's general description (every region that has metadata has one)."""
    if meta.general_desc is None or not meta.general_desc.national_number_pattern:
        raise ValueError(f"phonenumbers has no general pattern for region {meta.id!r}")
    return meta.general_desc


def code_of(meta: PhoneMetadata) -> int:
    """The region's calling code."""
    if meta.country_code is None:
        raise ValueError(f"phonenumbers has no calling code for region {meta.id!r}")
    return meta.country_code


def _in(n: str, lengths: tuple[int, ...]) -> str:
    """SQL: `n` has one of these lengths."""
    return f"length({n}) IN ({', '.join(map(str, lengths))})"


def _matches_desc(n: str, desc: phonenumbers.PhoneNumberDesc | None) -> str | None:
    """`n` matches `desc` (its possible lengths, then its pattern), as phonenumbers'
    `_is_number_matching_desc`; None where nothing can match."""
    if desc is None or not desc.national_number_pattern or desc.possible_length == (-1,):
        return None
    pattern = f"regexp_full_match({n}, {literal(desc.national_number_pattern)})"
    return f"({_in(n, desc.possible_length)} AND {pattern})" if desc.possible_length \
        else pattern


def _fits_general(n: str, meta: PhoneMetadata) -> str:
    """SQL: `n` matches the region's general pattern, no length test (phonenumbers'
    `_match_national_number`, its test of a viable number while parsing)."""
    return f"regexp_full_match({n}, {literal(str(general(meta).national_number_pattern))})"


def region_valid(n: str, meta: PhoneMetadata) -> str:
    """`n` is a valid national number of the region: its number type is not UNKNOWN."""
    whole = _matches_desc(n, meta.general_desc)
    types = [t for t in (_matches_desc(n, getattr(meta, name)) for name in NUMBER_TYPES) if t]
    if whole is None or not types:
        return "false"
    return f"({whole} AND ({' OR '.join(types)}))"


def calling_code_valid(n: str, code: int) -> str:
    """`is_valid_number` of `n` under calling code `code`: the region phonenumbers assigns it
    (the first whose leading digits match, or that has none and finds it valid) finds it
    valid."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]
    if len(regions) == 1:
        return region_valid(n, metadata(regions[0]))
    cases = []
    for region in regions:
        meta = PhoneMetadata.metadata_for_region(region)
        if meta is None:
            continue
        if meta.leading_digits:
            leading = literal(f"^(?:{meta.leading_digits})")
            cases.append(f"WHEN regexp_matches({n}, {leading}) THEN {region_valid(n, meta)}")
        elif (valid := region_valid(n, meta)) != "false":
            cases.append(f"WHEN {valid} THEN true")
    return f"(CASE {' '.join(cases)} ELSE false END)" if cases else "false"


def _group_source(pattern: str, group: int) -> str | None:
    """The text of capture group `group` of `pattern` (None if it has none such), found by
    scanning brackets: phonenumbers' prefix patterns are plain enough for that."""
    opened: list[int | None] = []  # per open parenthesis: its group number, or None
    count, i, start = 0, 0, None
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 1
        elif char == "[":
            i = pattern.index("]", i + 2 if pattern[i + 1:i + 2] == "]" else i + 1)
        elif char == "(":
            if pattern[i + 1:i + 2] == "?":
                opened.append(None)
            else:
                count += 1
                opened.append(count)
                if count == group:
                    start = i + 1
        elif char == ")" and opened and opened.pop() == group:
            return pattern[start:i]
        i += 1
    return None


@functools.cache
def readable(region: str) -> bool:
    """Whether the region's rules can be written here: a geographic region with general
    lengths, and a transform rule (if any) whose group is never empty when it takes part."""
    meta = PhoneMetadata.metadata_for_region(region)
    if meta is None or meta.general_desc is None:
        return False
    for m in (meta, _main(code_of(meta))):
        lengths = general(m).possible_length
        if not lengths or list(lengths) != sorted(lengths) or lengths[0] < 1:
            return False
        if m.national_prefix_transform_rule:
            prefix = m.national_prefix_for_parsing or ""
            try:
                last = _group_source(prefix, re.compile(prefix).groups)
            except ValueError:  # brackets the scan cannot follow: left to phonenumbers
                return False
            if last is None or re.fullmatch(f"(?:{last})", "") is not None:
                return False
    return True


def _stripped(x: str, meta: PhoneMetadata, parse: bool = True) -> str:
    """`x` without its national prefix where phonenumbers drops it.

    `_maybe_strip_national_prefix_carrier_code` keeps a number that is viable with its prefix
    and not without; `parse` (the step after it) keeps the stripped number only if its length
    is possible or too long. A prefix phonenumbers would transform is left to it
    (`_transformed`)."""
    prefix = meta.national_prefix_for_parsing
    if not prefix:
        return x
    if prefix.isdigit():
        taken, size = f"starts_with({x}, {literal(prefix)})", str(len(prefix))
    else:
        size = f"length(regexp_extract({x}, {literal(f'^(?:{prefix})')}))"
        taken = f"{size} > 0"
    rest = f"{x}[{size} + 1:]"
    condition = taken
    if parse:  # the length tests first: cheaper than the patterns
        lengths, local = general(meta).possible_length, general(meta).possible_length_local_only
        condition += f" AND ({_in(rest, lengths)} OR length({rest}) > {lengths[-1]})"
        if local:
            condition += f" AND NOT {_in(rest, local)}"
    condition += f" AND NOT ({_fits_general(x, meta)} AND NOT {_fits_general(rest, meta)})"
    return f"CASE WHEN {condition} THEN {rest} ELSE {x} END"


def _transformed(x: str, meta: PhoneMetadata) -> str | None:
    """SQL true where phonenumbers would transform `x`'s national prefix (its rule's group
    takes part), None where the region has no transform rule."""
    prefix, rule = meta.national_prefix_for_parsing, meta.national_prefix_transform_rule
    if not prefix or not rule:
        return None
    return f"regexp_extract({x}, {literal(f'^(?:{prefix})')}, {re.compile(prefix).groups}) <> ''"


def _main(code: int) -> PhoneMetadata:
    """The metadata parse reads a number by once it has its calling code: the code's main
    region's."""
    return metadata(phonenumbers.region_code_for_country_code(code))


def _unsettled(d: str, meta: PhoneMetadata) -> str:
    """SQL true where a number written without `+` in the region is left to phonenumbers:
    `00` (which the tag also reads as `+`), the region's international prefix, a national
    prefix to transform, or the region's own calling code ahead of such a prefix."""
    tests = [f"starts_with({d}, '00')"]
    if idd := meta.international_prefix:
        tests.append(f"starts_with({d}, {literal(idd)})" if idd.isdigit() else
                     f"regexp_matches({d}, {literal(f'^(?:{idd})')})")
    if transform := _transformed(d, meta):
        tests.append(transform)
    if meta.national_prefix_transform_rule or \
            _main(code_of(meta)).national_prefix_transform_rule:
        tests.append(f"starts_with({d}, {literal(str(meta.country_code))})")
    return " OR ".join(tests)


def rules(regions: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The regions whose numbers written without `+` are read in SQL, and the calling codes of
    `+` numbers: `regions` that can be read, none of North America's."""
    national = tuple(dict.fromkeys(r for r in regions if r not in NANP and readable(r)))
    codes = tuple(dict.fromkeys(code_of(metadata(r)) for r in national))
    return national, codes


def number_sql(v: str, d: str, r: str, regions: tuple[str, ...],
               let: Callable[[str, str], str], read: str) -> tuple[str, str]:
    """(calling code, national significant number) of value `v` with digits `d` in row region
    `r`, where `read` (a plain number) holds, as phonenumbers' `parse` reads them; the code is
    NULL where these rules leave the number to phonenumbers. Each step is a named value
    (`let`), chosen by region or code: the digits dialled from abroad (after `+` or `00`), the
    calling code, the digits after the region's own code and whether parse drops that code,
    the digits before the national prefix is stripped and the region whose rules strip it, and
    the national number."""
    national, codes = rules(regions)
    if not codes:
        return "NULL", "NULL"
    # The digits after `+`, or after `00` where that is the region's international prefix
    # (parse strips it like `+`): read alike, whatever the row's region. (Where a 0 follows,
    # parse keeps the `00`, and no calling code starts with 0: such a number is left.)
    idd = [literal(n) for n in national if metadata(n).international_prefix == "00"]
    dialled = f"starts_with({d}, '00') AND {r} IN ({', '.join(idd)})" if idd else "false"
    abroad = let("abroad", f"CASE WHEN NOT {read} THEN NULL WHEN starts_with({v}, '+') THEN "
                           f"{d} WHEN {dialled} THEN {d}[3:] END")
    code_abroad = " ".join(f"WHEN starts_with({abroad}, '{c}') THEN "
                           + (f"(CASE WHEN {t} THEN NULL ELSE '{c}' END)"
                              if (t := _transformed(f"{abroad}[{len(str(c)) + 1}:]", _main(c)))
                              else f"'{c}'") for c in codes)
    code_at_home = " ".join(
        f"WHEN {literal(region)} THEN (CASE WHEN {_unsettled(d, metadata(region))} THEN NULL "
        f"ELSE '{metadata(region).country_code}' END)" for region in national)
    code = let("cc", f"CASE WHEN NOT {read} OR length({d}) NOT BETWEEN 4 AND 20 THEN NULL "
                     f"WHEN {abroad} IS NOT NULL THEN (CASE {code_abroad} END) "
                     f"ELSE (CASE {r} {code_at_home} END) END")
    # The digits may start with the region's own calling code: parse drops it where the rest
    # (without its national prefix) fits better, or the whole is too long
    # (_maybe_extract_country_code); the national prefix is then stripped again, by the rules
    # of the code's main region.
    after = " ".join(
        f"WHEN {literal(region)} THEN (CASE WHEN starts_with({d}, '{own}') THEN "
        f"{_stripped(f'{d}[{len(own) + 1}:]', metadata(region), parse=False)} END)"
        for region in national for own in [str(metadata(region).country_code)])
    after_own_code = let("after_own_code", f"CASE WHEN {code} IS NOT NULL AND {abroad} IS NULL "
                                           f"THEN (CASE {r} {after} END) END")
    dropped = []
    for region in national:
        meta = metadata(region)
        lengths, local = general(meta).possible_length, general(meta).possible_length_local_only
        too_long = f"length({d}) > {lengths[-1]}" + (f" AND NOT {_in(d, local)}" if local else "")
        dropped.append(f"WHEN {literal(region)} THEN ((NOT {_fits_general(d, meta)} AND "
                       f"{_fits_general(after_own_code, meta)}) OR ({too_long}))")
    own_code_dropped = let("own_code_dropped", f"CASE WHEN {after_own_code} IS NOT NULL THEN "
                                               f"coalesce(CASE {r} {' '.join(dropped)} END, "
                                               "false) ELSE false END")
    with_prefix = let("with_prefix", f"CASE WHEN {code} IS NULL THEN NULL WHEN {abroad} IS NOT "
                                     f"NULL THEN {abroad}[length({code}) + 1:] WHEN "
                                     f"{own_code_dropped} THEN {after_own_code} ELSE {d} END")
    main_of = " ".join(f"WHEN '{c}' THEN {literal(_main(c).id)}" for c in codes)
    rules_region = let("rules_region", f"CASE WHEN {code} IS NULL THEN NULL WHEN {abroad} IS "
                                       f"NOT NULL OR {own_code_dropped} THEN (CASE {code} "
                                       f"{main_of} END) ELSE {r} END")
    keys = tuple(dict.fromkeys(list(national) + [_main(c).id for c in codes]))
    strips = " ".join(f"WHEN {literal(k)} THEN {_stripped(with_prefix, metadata(k))}"
                      for k in keys)
    number = let("nsn", f"CASE WHEN length({with_prefix}) >= {MIN_NSN} THEN "
                        f"(CASE {rules_region} {strips} END) END")
    return code, number


def valid_sql(code: str, n: str, regions: tuple[str, ...]) -> str:
    """SQL true where national number `n` is valid under calling code `code`."""
    _, codes = rules(regions)
    cases = " ".join(f"WHEN '{c}' THEN {calling_code_valid(n, c)}" for c in codes)
    return (f"(length({n}) BETWEEN {MIN_NSN} AND {MAX_NSN} AND "
            f"coalesce(CASE {code} {cases} END, false))") if codes else "false"


# ---------------------------------------------------------------- North America (+1)


def _valid_patterns(region: str) -> tuple[str, str]:
    """Phonenumbers' test of a valid national number of `region`: its general pattern, and
    one of its number types' patterns."""
    meta = metadata(region)
    types = [d.national_number_pattern for d in (getattr(meta, t) for t in NUMBER_TYPES)
             if d is not None and d.national_number_pattern]
    return (f"(?:{general(meta).national_number_pattern})",
            f"(?:{'|'.join(f'(?:{p})' for p in types)})")


@functools.cache
def leading_prefixes(leading: str) -> tuple[str, ...]:
    """The shortest digit strings, of up to four digits, that a +1 region's leading-digits
    pattern matches at a number's start, so a prefix test can replace the regex.

    phonenumbers' +1 patterns are three or four digits long; a test holds them to that.
    """
    pattern = re.compile(f"(?:{leading})")
    found: list[str] = []
    for size in range(1, 5):
        found += [p for p in (str(i).zfill(size) for i in range(10 ** size))
                  if pattern.fullmatch(p) and not any(p.startswith(q) for q in found)]
    return tuple(found)


def nanp_sql(n: str) -> str:
    """E.164 of a 10-digit +1 national number `n`, or NULL, as phonenumbers decides it: the
    first +1 region (in its order) whose leading digits match, or that has none and whose
    patterns match, must find the number valid.

    The regions with leading digits are tried as a run between those without (US first, then
    CA): one test of the number's first three or four digits against the run's prefixes says
    whether any of them claims it, so a number none claims skips the run's regexes."""
    def valid(region: str) -> str:
        whole, types = _valid_patterns(region)
        return (f"regexp_full_match({n}, {literal(whole)}) AND "
                f"regexp_full_match({n}, {literal(types)})")

    def prefixed(run: list[tuple[str, tuple[str, ...]]]) -> str:
        cases, tests = [], []
        for region, prefixes in run:
            test = " OR ".join(f"{n}[1:{len(p)}] = {literal(p)}" for p in prefixes)
            cases.append(f"WHEN {test} THEN (CASE WHEN {valid(region)} THEN '+1' || {n} END)")
            tests += prefixes
        claimed = " OR ".join(
            f"{n}[1:{size}] IN ({', '.join(literal(p) for p in tests if len(p) == size)})"
            for size in sorted({len(p) for p in tests}))
        return f"WHEN {claimed} THEN (CASE {' '.join(cases)} END)"

    cases: list[str] = []
    run: list[tuple[str, tuple[str, ...]]] = []
    for region in NANP:
        meta = PhoneMetadata.metadata_for_region(region)
        leading = meta.leading_digits if meta is not None else None
        if leading:
            run.append((region, leading_prefixes(leading)))
            continue
        if run:
            cases.append(prefixed(run))
            run = []
        cases.append(f"WHEN {valid(region)} THEN '+1' || {n}")
    if run:
        cases.append(prefixed(run))
    return f"CASE {' '.join(cases)} END"
