"""Common English given-name diminutives, each mapped to one canonical name.

Identity resolution compares given names through this table (`Bob` and `Robert` are one name),
both in the household rule and in splink's comparison; a name not listed is its own canonical
form.
"""

GROUPS: dict[str, tuple[str, ...]] = {
    "alexander": ("alex", "al", "sandy", "xander"),
    "andrew": ("andy", "drew"),
    "anthony": ("tony",),
    "barbara": ("barb", "babs"),
    "benjamin": ("ben", "benny", "benji"),
    "catherine": ("cathy", "kate", "katie", "kathy", "katherine", "kat"),
    "charles": ("charlie", "chuck", "chas"),
    "christopher": ("chris", "kit"),
    "daniel": ("dan", "danny"),
    "david": ("dave", "davey"),
    "deborah": ("debbie", "deb"),
    "edward": ("ed", "eddie", "ted", "ned"),
    "elizabeth": ("liz", "beth", "betty", "eliza", "lizzie", "libby"),
    "james": ("jim", "jimmy", "jamie"),
    "jennifer": ("jen", "jenny"),
    "jessica": ("jess", "jessie"),
    "john": ("jack", "johnny", "jon"),
    "joseph": ("joe", "joey"),
    "joshua": ("josh",),
    "linda": ("lindy",),
    "margaret": ("maggie", "meg", "peggy", "marge"),
    "mary": ("molly", "polly", "mae"),
    "matthew": ("matt",),
    "michael": ("mike", "mikey", "mick"),
    "nicholas": ("nick", "nicky"),
    "patricia": ("pat", "patty", "trish", "tricia"),
    "patrick": ("paddy",),
    "richard": ("rick", "ricky", "dick", "rich"),
    "robert": ("bob", "bobby", "rob", "robbie", "bert"),
    "samuel": ("sam", "sammy"),
    "stephen": ("steve", "steven", "stevie"),
    "susan": ("sue", "susie", "suzy"),
    "thomas": ("tom", "tommy"),
    "timothy": ("tim", "timmy"),
    "victoria": ("vicky", "tori"),
    "william": ("will", "bill", "billy", "willy", "liam"),
}

NICKNAMES: dict[str, str] = {
    nick: name for name, nicks in GROUPS.items() for nick in nicks}


def canonical_given_name(name: str | None) -> str | None:
    """The lower-case canonical form of a given name (`Bobby` → `robert`)."""
    if name is None:
        return None
    key = " ".join(name.lower().split())
    return NICKNAMES.get(key, key) or None
