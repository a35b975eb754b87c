"""A synthetic cross-domain world, the embedded default dataset of the demo and the tests.

Latent *topics* (space, the sea, crime, ...) are shared by every domain, but each domain writes
about them in its own vocabulary: a book titled "The Starship of the Nebula" and a film called
"Return of the Spacecraft (1987)" are about the same thing without sharing a word. Users prefer a
few topics in every domain, their next event tends to stay on the topic of the last one, and items
are Zipf-popular within their topic. The first domain is the rich source; the last one is sparse.

So a model that reads item text through a language model can carry a user's taste from the source
domain to the target domain; an ID-only model trained on the target domain cannot.

Example:
    >>> ds = generate_world(SyntheticConfig(num_users=200, seed=1))
    >>> ds.domains
    ['books', 'films']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossrec.config import DataConfig, SyntheticConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.loaders import register_loader
from crossrec.data.schema import EventType, Interaction, Item

# topic -> (vocabulary of the source style, vocabulary of the target style, category names)
TOPICS: list[tuple[str, list[str], list[str], tuple[str, str]]] = [
    (
        "space",
        ["Starship", "Galaxy", "Astronaut", "Orbit", "Nebula", "Planet", "Cosmos", "Rocket"],
        ["Spacecraft", "Stars", "Mars", "Moon", "Alien", "Solar", "Interstellar", "Launch"],
        ("Science Fiction", "Sci-Fi Adventure"),
    ),
    (
        "sea",
        ["Ocean", "Tide", "Sailor", "Harbor", "Voyage", "Reef", "Whale", "Lighthouse"],
        ["Sea", "Ship", "Pirates", "Island", "Storm", "Captain", "Waves", "Submarine"],
        ("Nautical Fiction", "Sea Adventure"),
    ),
    (
        "crime",
        ["Detective", "Murder", "Alibi", "Clue", "Inspector", "Witness", "Suspect", "Evidence"],
        ["Heist", "Gangster", "Cop", "Mob", "Robbery", "Killer", "Precinct", "Getaway"],
        ("Mystery", "Crime Thriller"),
    ),
    (
        "romance",
        ["Love", "Heart", "Wedding", "Kiss", "Sweetheart", "Letters", "Passion", "Bride"],
        ["Romance", "Valentine", "Date", "Honeymoon", "Lovers", "Proposal", "Crush", "Darling"],
        ("Romance Novel", "Romantic Comedy"),
    ),
    (
        "war",
        ["Battle", "Empire", "Soldier", "Siege", "General", "Legion", "Trenches", "Victory"],
        ["War", "Army", "Platoon", "Invasion", "Frontline", "Commander", "Combat", "Regiment"],
        ("Military History", "War Drama"),
    ),
    (
        "cooking",
        ["Recipes", "Kitchen", "Baking", "Flavors", "Spices", "Bread", "Feast", "Chef"],
        ["Cook", "Restaurant", "Dinner", "Menu", "Pastry", "Taste", "Cuisine", "Banquet"],
        ("Cookbook", "Food Documentary"),
    ),
    (
        "fantasy",
        ["Dragon", "Wizard", "Sorcery", "Kingdom", "Spell", "Elves", "Sword", "Prophecy"],
        ["Magic", "Witch", "Enchanted", "Castle", "Quest", "Fairy", "Knight", "Potion"],
        ("Epic Fantasy", "Fantasy Adventure"),
    ),
    (
        "horror",
        ["Haunting", "Ghost", "Graveyard", "Nightmare", "Curse", "Shadows", "Crypt", "Phantom"],
        ["Zombie", "Terror", "Scream", "Demon", "Possessed", "Vampire", "Slasher", "Fright"],
        ("Horror Fiction", "Horror Movie"),
    ),
    (
        "sports",
        ["Champion", "Marathon", "Coach", "Season", "Stadium", "Rookie", "Trophy", "Playoffs"],
        ["Team", "Match", "Boxing", "Goal", "League", "Racing", "Tournament", "Athlete"],
        ("Sports Biography", "Sports Drama"),
    ),
    (
        "nature",
        ["Forest", "Wilderness", "Birds", "Mountains", "Rivers", "Wolves", "Meadow", "Seasons"],
        [
            "Wildlife",
            "Safari",
            "Jungle",
            "Animals",
            "Savanna",
            "Rainforest",
            "Glacier",
            "Predators",
        ],
        ("Nature Writing", "Nature Documentary"),
    ),
    (
        "music",
        ["Symphony", "Melody", "Piano", "Composer", "Songbook", "Jazz", "Orchestra", "Rhythm"],
        ["Concert", "Band", "Rockstar", "Musical", "Singer", "Guitar", "Dance", "Tour"],
        ("Music History", "Musical Film"),
    ),
    (
        "technology",
        ["Robot", "Algorithm", "Machine", "Code", "Circuit", "Android", "Network", "Cyber"],
        ["Hacker", "Computer", "Artificial", "Virtual", "Matrix", "Digital", "Cyborg", "Program"],
        ("Tech Thriller", "Cyberpunk Film"),
    ),
    (
        "western",
        ["Frontier", "Outlaw", "Ranch", "Prairie", "Sheriff", "Cattle", "Canyon", "Wagon"],
        ["Cowboy", "Gunfighter", "Saloon", "Desert", "Bandit", "Horseback", "Showdown", "Rodeo"],
        ("Western Novel", "Western"),
    ),
    (
        "children",
        ["Puppy", "Bedtime", "Toys", "Friendship", "Playground", "Teddy", "School", "Birthday"],
        ["Kids", "Cartoon", "Family", "Pets", "Holiday", "Playmates", "Summer Camp", "Puppets"],
        ("Children's Books", "Family Animation"),
    ),
    (
        "espionage",
        ["Spy", "Conspiracy", "Agent", "Embassy", "Secrets", "Treason", "Cipher", "Diplomat"],
        [
            "Espionage",
            "Undercover",
            "Assassin",
            "Mission",
            "Intelligence",
            "Covert",
            "Mole",
            "Sniper",
        ],
        ("Spy Novel", "Espionage Thriller"),
    ),
    (
        "travel",
        ["Journey", "Passport", "Atlas", "Wanderer", "Road", "Explorer", "Pilgrim", "Map"],
        [
            "Hitchhiker",
            "Backpacker",
            "Expedition",
            "Tourist",
            "Highway",
            "Trek",
            "Vacation",
            "Nomad",
        ],
        ("Travel Writing", "Road Movie"),
    ),
    (
        "medicine",
        ["Surgeon", "Hospital", "Cure", "Nurse", "Anatomy", "Remedy", "Clinic", "Diagnosis"],
        ["Doctor", "Emergency", "Virus", "Outbreak", "Ward", "Pandemic", "Paramedic", "Surgery"],
        ("Medical Fiction", "Medical Drama"),
    ),
    (
        "art",
        [
            "Painter",
            "Canvas",
            "Gallery",
            "Sculptor",
            "Portrait",
            "Museum",
            "Brushstrokes",
            "Fresco",
        ],
        ["Artist", "Masterpiece", "Studio", "Forgery", "Exhibition", "Muse", "Color", "Mural"],
        ("Art History", "Art House Film"),
    ),
    (
        "mountains",
        ["Summit", "Climber", "Avalanche", "Peak", "Ridge", "Alpine", "Crevasse", "Basecamp"],
        ["Everest", "Ascent", "Blizzard", "Cliff", "Mountaineer", "Rope", "Icefall", "Sherpa"],
        ("Mountaineering", "Survival Film"),
    ),
    (
        "business",
        ["Fortune", "Merchant", "Ledger", "Tycoon", "Market", "Empire Builder", "Venture", "Deal"],
        ["Wall Street", "Startup", "Boardroom", "Billionaire", "Stock", "Hustle", "Merger", "CEO"],
        ("Business Saga", "Corporate Drama"),
    ),
    (
        "mythology",
        ["Gods", "Olympus", "Titan", "Oracle", "Hero", "Labyrinth", "Trident", "Odyssey"],
        ["Legend", "Demigod", "Myth", "Warrior", "Underworld", "Immortal", "Kraken", "Thunder"],
        ("Mythology", "Sword and Sandal"),
    ),
    (
        "comedy",
        ["Jester", "Farce", "Mischief", "Blunder", "Prank", "Satire", "Wit", "Folly"],
        ["Laughs", "Slapstick", "Goofball", "Party", "Roommates", "Hangover", "Oddballs", "Spoof"],
        ("Humor", "Comedy"),
    ),
    (
        "weather",
        ["Tempest", "Drought", "Monsoon", "Frost", "Thunderclouds", "Flood", "Hurricane", "Gale"],
        ["Tornado", "Twister", "Heatwave", "Deluge", "Lightning", "Cyclone", "Snowstorm", "Eye"],
        ("Climate Fiction", "Disaster Movie"),
    ),
    (
        "school",
        ["Academy", "Scholar", "Professor", "Library", "Exams", "Campus", "Lecture", "Dormitory"],
        [
            "Classroom",
            "Graduation",
            "Prom",
            "Teacher",
            "Detention",
            "Varsity",
            "Freshman",
            "Yearbook",
        ],
        ("Campus Novel", "Teen Movie"),
    ),
]

_SOURCE_FRAMES = [
    "The {a} of the {b}",
    "{a} and {b}",
    "A {a} Tale: {b}",
    "{a}: The {b} Chronicles",
    "The Last {a}",
    "{a} in the Time of {b}",
    "Memoirs of a {a}",
    "The {a} Letters",
]
_TARGET_FRAMES = [
    "{a} {b} ({year})",
    "Return of the {a} ({year})",
    "{a} Rising ({year})",
    "Night of the {a} ({year})",
    "{a} vs. {b} ({year})",
    "Operation {a} ({year})",
    "The {a} Files ({year})",
    "Beyond the {b} ({year})",
]


def _make_items(
    rng: np.random.Generator, domain: str, style: int, count: int, num_topics: int
) -> tuple[list[Item], np.ndarray]:
    frames = _SOURCE_FRAMES if style == 0 else _TARGET_FRAMES
    items: list[Item] = []
    topic_of = np.empty(count, dtype=np.int64)
    seen_titles: dict[str, int] = {}
    for i in range(count):
        topic = int(rng.integers(num_topics))
        topic_of[i] = topic
        words = TOPICS[topic][1 + style]
        a, b = rng.choice(len(words), size=2, replace=False)
        title = frames[int(rng.integers(len(frames)))].format(
            a=words[a], b=words[b], year=int(rng.integers(1950, 2025))
        )
        # Disambiguate repeated titles the way catalogues do.
        n = seen_titles.get(title, 0)
        seen_titles[title] = n + 1
        if n:
            title = f"{title} {'Part' if style == 0 else 'Vol.'} {n + 1}"
        category = TOPICS[topic][3][style]
        items.append(
            Item(domain=domain, item_id=f"{domain[0]}{i:05d}", title=title, categories=(category,))
        )
    return items, topic_of


def generate_world(cfg: SyntheticConfig) -> CrossDomainDataset:
    """Generates the world described by ``cfg``; the same config gives the same dataset."""
    rng = np.random.default_rng(cfg.seed)
    num_topics = cfg.num_topics
    items: list[Item] = []
    domain_topics: list[np.ndarray] = []
    topic_members: list[list[np.ndarray]] = []
    topic_weights: list[list[np.ndarray]] = []
    for d, (domain, count) in enumerate(zip(cfg.domains, cfg.items_per_domain, strict=True)):
        style = 0 if d < len(cfg.domains) - 1 else 1
        dom_items, topic_of = _make_items(rng, domain, style, count, num_topics)
        items.extend(dom_items)
        domain_topics.append(topic_of)
        members: list[np.ndarray] = []
        popularity: list[np.ndarray] = []
        for t in range(num_topics):
            idx = np.flatnonzero(topic_of == t)
            members.append(idx)
            # Zipf popularity within the topic; which item is a hit is random.
            w = 1.0 / np.arange(1, idx.size + 1) ** 0.9
            popularity.append(rng.permutation(w) / w.sum() if idx.size else w)
        topic_members.append(members)
        topic_weights.append(popularity)

    interactions: list[Interaction] = []
    for u in range(cfg.num_users):
        user = f"u{u:05d}"
        liked = rng.choice(num_topics, size=min(cfg.topics_per_user, num_topics), replace=False)
        pref = np.full(num_topics, 0.0)
        pref[liked] = rng.dirichlet(np.ones(liked.size))
        counts = [int(rng.poisson(m)) for m in cfg.mean_interactions]
        labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
        gaps = rng.exponential(3600.0, size=labels.size)
        times = 1_600_000_000.0 + u * 17.0 + np.cumsum(gaps)
        seen: list[set[int]] = [set() for _ in cfg.domains]
        topic = int(rng.choice(num_topics, p=pref))
        for step, d in enumerate(labels):
            d = int(d)
            roll = rng.random()
            if roll < cfg.noise:
                topic = int(rng.integers(num_topics))
            elif roll >= cfg.noise + cfg.topic_stickiness * (1.0 - cfg.noise):
                topic = int(rng.choice(num_topics, p=pref))
            pool, weights = topic_members[d][topic], topic_weights[d][topic]
            fresh = np.array([i not in seen[d] for i in pool], dtype=bool)
            if not fresh.any():
                continue  # the user has seen the whole topic in this domain
            w = weights * fresh
            local = int(pool[rng.choice(pool.size, p=w / w.sum())])
            seen[d].add(local)
            domain = cfg.domains[d]
            interactions.append(
                Interaction(
                    user_id=user,
                    domain=domain,
                    item_id=f"{domain[0]}{local:05d}",
                    timestamp=float(times[step]),
                    event_type=EventType.PURCHASE,
                )
            )
    return CrossDomainDataset.from_records(
        items, interactions, source="synthetic", name=f"synthetic-seed{cfg.seed}"
    )


@register_loader("synthetic")
def load_synthetic(path: object, cfg: DataConfig) -> CrossDomainDataset:
    """The synthetic world from ``cfg.synthetic`` (``path`` is ignored)."""
    return generate_world(cfg.synthetic)


def item_topics(dataset: CrossDomainDataset) -> np.ndarray:
    """The topic of every item of a synthetic world (read back from its category), -1 when an
    item has no synthetic category."""
    by_category = {cat: t for t, topic in enumerate(TOPICS) for cat in topic[3]}
    return np.array(
        [by_category.get(it.categories[0], -1) if it.categories else -1 for it in dataset.items],
        dtype=np.int64,
    )


def topic_of(name: str | int) -> int:
    """A topic's index from its name ("horror") or index."""
    if isinstance(name, int) or str(name).isdigit():
        index = int(name)
        if not 0 <= index < len(TOPICS):
            raise ValueError(f"topic index {index} is out of range 0..{len(TOPICS) - 1}")
        return index
    names = [t[0] for t in TOPICS]
    if name not in names:
        raise ValueError(f"unknown topic {name!r}; known: {', '.join(names)}")
    return names.index(str(name))


def drift_interactions(
    dataset: CrossDomainDataset,
    *,
    topic: str | int,
    domain: str,
    users: Sequence[str],
    events_per_user: int,
    share: float,
    start: float,
    seed: int = 0,
) -> list[Interaction]:
    """Events after a preference shift: in ``domain``, ``topic`` suddenly becomes popular.

    Each of ``users`` makes ``events_per_user`` new events in ``domain``. With probability
    ``share`` an event picks an item of the trending topic (a few hits take most of it: Zipf),
    otherwise it follows the user's own taste (the topic of a random item of their history,
    any domain). Items the user has seen in ``domain`` are not picked again. Times run from
    ``start``, a few minutes apart per user.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    trend = topic_of(topic)
    rng = np.random.default_rng(seed)
    topics = item_topics(dataset)
    d = dataset.domain_index[domain]
    in_domain = dataset.item_domain == d
    members = {t: np.flatnonzero(in_domain & (topics == t)) for t in range(len(TOPICS))}
    if not members[trend].size:
        raise ValueError(f"domain {domain!r} has no item of topic {TOPICS[trend][0]!r}")
    hits = 1.0 / np.arange(1, members[trend].size + 1) ** 1.2
    trend_weights = rng.permutation(hits / hits.sum())
    out: list[Interaction] = []
    for n, user in enumerate(users):
        history = dataset.user_sequence(user)
        liked = topics[history]
        liked = liked[liked >= 0]
        seen = set(history[in_domain[history]].tolist())
        t = start + n * 0.25
        for _ in range(events_per_user):
            if rng.random() < share or not liked.size:
                pool, weights = members[trend], trend_weights
            else:
                pool = members[int(rng.choice(liked))]
                weights = np.full(pool.size, 1.0 / max(pool.size, 1))
            fresh = np.array([g not in seen for g in pool.tolist()], dtype=bool)
            if not fresh.any():
                continue
            w = weights * fresh
            g = int(pool[rng.choice(pool.size, p=w / w.sum())])
            seen.add(g)
            t += float(rng.exponential(120.0)) + 1.0
            item = dataset.items[g]
            out.append(
                Interaction(
                    user_id=user,
                    domain=item.domain,
                    item_id=item.item_id,
                    timestamp=t,
                    event_type=EventType.PURCHASE,
                )
            )
    return out
