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

import numpy as np

from crossrec.config import DataConfig, SyntheticConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.loaders import register_loader
from crossrec.data.schema import EventType, Interaction, Item

# topic -> (vocabulary of the source style, vocabulary of the target style, category names)
TOPICS: list[tuple[str, list[str], list[str], tuple[str, str]]] = [
    ("space",
     ["Starship", "Galaxy", "Astronaut", "Orbit", "Nebula", "Planet", "Cosmos", "Rocket"],
     ["Spacecraft", "Stars", "Mars", "Moon", "Alien", "Solar", "Interstellar", "Launch"],
     ("Science Fiction", "Sci-Fi Adventure")),
    ("sea",
     ["Ocean", "Tide", "Sailor", "Harbor", "Voyage", "Reef", "Whale", "Lighthouse"],
     ["Sea", "Ship", "Pirates", "Island", "Storm", "Captain", "Waves", "Submarine"],
     ("Nautical Fiction", "Sea Adventure")),
    ("crime",
     ["Detective", "Murder", "Alibi", "Clue", "Inspector", "Witness", "Suspect", "Evidence"],
     ["Heist", "Gangster", "Cop", "Mob", "Robbery", "Killer", "Precinct", "Getaway"],
     ("Mystery", "Crime Thriller")),
    ("romance",
     ["Love", "Heart", "Wedding", "Kiss", "Sweetheart", "Letters", "Passion", "Bride"],
     ["Romance", "Valentine", "Date", "Honeymoon", "Lovers", "Proposal", "Crush", "Darling"],
     ("Romance Novel", "Romantic Comedy")),
    ("war",
     ["Battle", "Empire", "Soldier", "Siege", "General", "Legion", "Trenches", "Victory"],
     ["War", "Army", "Platoon", "Invasion", "Frontline", "Commander", "Combat", "Regiment"],
     ("Military History", "War Drama")),
    ("cooking",
     ["Recipes", "Kitchen", "Baking", "Flavors", "Spices", "Bread", "Feast", "Chef"],
     ["Cook", "Restaurant", "Dinner", "Menu", "Pastry", "Taste", "Cuisine", "Banquet"],
     ("Cookbook", "Food Documentary")),
    ("fantasy",
     ["Dragon", "Wizard", "Sorcery", "Kingdom", "Spell", "Elves", "Sword", "Prophecy"],
     ["Magic", "Witch", "Enchanted", "Castle", "Quest", "Fairy", "Knight", "Potion"],
     ("Epic Fantasy", "Fantasy Adventure")),
    ("horror",
     ["Haunting", "Ghost", "Graveyard", "Nightmare", "Curse", "Shadows", "Crypt", "Phantom"],
     ["Zombie", "Terror", "Scream", "Demon", "Possessed", "Vampire", "Slasher", "Fright"],
     ("Horror Fiction", "Horror Movie")),
    ("sports",
     ["Champion", "Marathon", "Coach", "Season", "Stadium", "Rookie", "Trophy", "Playoffs"],
     ["Team", "Match", "Boxing", "Goal", "League", "Racing", "Tournament", "Athlete"],
     ("Sports Biography", "Sports Drama")),
    ("nature",
     ["Forest", "Wilderness", "Birds", "Mountains", "Rivers", "Wolves", "Meadow", "Seasons"],
     ["Wildlife", "Safari", "Jungle", "Animals", "Savanna", "Rainforest", "Glacier", "Predators"],
     ("Nature Writing", "Nature Documentary")),
    ("music",
     ["Symphony", "Melody", "Piano", "Composer", "Songbook", "Jazz", "Orchestra", "Rhythm"],
     ["Concert", "Band", "Rockstar", "Musical", "Singer", "Guitar", "Dance", "Tour"],
     ("Music History", "Musical Film")),
    ("technology",
     ["Robot", "Algorithm", "Machine", "Code", "Circuit", "Android", "Network", "Cyber"],
     ["Hacker", "Computer", "Artificial", "Virtual", "Matrix", "Digital", "Cyborg", "Program"],
     ("Tech Thriller", "Cyberpunk Film")),
    ("western",
     ["Frontier", "Outlaw", "Ranch", "Prairie", "Sheriff", "Cattle", "Canyon", "Wagon"],
     ["Cowboy", "Gunfighter", "Saloon", "Desert", "Bandit", "Horseback", "Showdown", "Rodeo"],
     ("Western Novel", "Western")),
    ("children",
     ["Puppy", "Bedtime", "Toys", "Friendship", "Playground", "Teddy", "School", "Birthday"],
     ["Kids", "Cartoon", "Family", "Pets", "Holiday", "Playmates", "Summer Camp", "Puppets"],
     ("Children's Books", "Family Animation")),
    ("espionage",
     ["Spy", "Conspiracy", "Agent", "Embassy", "Secrets", "Treason", "Cipher", "Diplomat"],
     ["Espionage", "Undercover", "Assassin", "Mission", "Intelligence", "Covert", "Mole", "Sniper"],
     ("Spy Novel", "Espionage Thriller")),
    ("travel",
     ["Journey", "Passport", "Atlas", "Wanderer", "Road", "Explorer", "Pilgrim", "Map"],
     ["Hitchhiker", "Backpacker", "Expedition", "Tourist", "Highway", "Trek", "Vacation", "Nomad"],
     ("Travel Writing", "Road Movie")),
    ("medicine",
     ["Surgeon", "Hospital", "Cure", "Nurse", "Anatomy", "Remedy", "Clinic", "Diagnosis"],
     ["Doctor", "Emergency", "Virus", "Outbreak", "Ward", "Pandemic", "Paramedic", "Surgery"],
     ("Medical Fiction", "Medical Drama")),
    ("art",
     ["Painter", "Canvas", "Gallery", "Sculptor", "Portrait", "Museum", "Brushstrokes", "Fresco"],
     ["Artist", "Masterpiece", "Studio", "Forgery", "Exhibition", "Muse", "Color", "Mural"],
     ("Art History", "Art House Film")),
    ("mountains",
     ["Summit", "Climber", "Avalanche", "Peak", "Ridge", "Alpine", "Crevasse", "Basecamp"],
     ["Everest", "Ascent", "Blizzard", "Cliff", "Mountaineer", "Rope", "Icefall", "Sherpa"],
     ("Mountaineering", "Survival Film")),
    ("business",
     ["Fortune", "Merchant", "Ledger", "Tycoon", "Market", "Empire Builder", "Venture", "Deal"],
     ["Wall Street", "Startup", "Boardroom", "Billionaire", "Stock", "Hustle", "Merger", "CEO"],
     ("Business Saga", "Corporate Drama")),
    ("mythology",
     ["Gods", "Olympus", "Titan", "Oracle", "Hero", "Labyrinth", "Trident", "Odyssey"],
     ["Legend", "Demigod", "Myth", "Warrior", "Underworld", "Immortal", "Kraken", "Thunder"],
     ("Mythology", "Sword and Sandal")),
    ("comedy",
     ["Jester", "Farce", "Mischief", "Blunder", "Prank", "Satire", "Wit", "Folly"],
     ["Laughs", "Slapstick", "Goofball", "Party", "Roommates", "Hangover", "Oddballs", "Spoof"],
     ("Humor", "Comedy")),
    ("weather",
     ["Tempest", "Drought", "Monsoon", "Frost", "Thunderclouds", "Flood", "Hurricane", "Gale"],
     ["Tornado", "Twister", "Heatwave", "Deluge", "Lightning", "Cyclone", "Snowstorm", "Eye"],
     ("Climate Fiction", "Disaster Movie")),
    ("school",
     ["Academy", "Scholar", "Professor", "Library", "Exams", "Campus", "Lecture", "Dormitory"],
     ["Classroom", "Graduation", "Prom", "Teacher", "Detention", "Varsity", "Freshman", "Yearbook"],
     ("Campus Novel", "Teen Movie")),
]  # fmt: skip

_SOURCE_FRAMES = [
    "The {a} of the {b}", "{a} and {b}", "A {a} Tale: {b}", "{a}: The {b} Chronicles",
    "The Last {a}", "{a} in the Time of {b}", "Memoirs of a {a}", "The {a} Letters",
]  # fmt: skip
_TARGET_FRAMES = [
    "{a} {b} ({year})", "Return of the {a} ({year})", "{a} Rising ({year})",
    "Night of the {a} ({year})", "{a} vs. {b} ({year})", "Operation {a} ({year})",
    "The {a} Files ({year})", "Beyond the {b} ({year})",
]  # fmt: skip


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
