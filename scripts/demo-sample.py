#!/usr/bin/env python3
"""Write examples/data/sample-posts.jsonl: the offline demo's sample posts.

Synthetic Mastodon API statuses by invented people on invented servers
(*.example), six weeks of them, in several languages, with the tags, client
applications, threads, replies, boosts, media, content warnings and polls of
ordinary accounts, so the demo's statistics have something to say. Seeded:
running it again writes the same file.

    python3 scripts/demo-sample.py > examples/data/sample-posts.jsonl
"""
import json
import random
from datetime import datetime, timedelta, timezone

rng = random.Random(20261101)
START = datetime(2026, 10, 5, tzinfo=timezone.utc)
DAYS = 42
COUNT = 240

TEXT = {
    "en": [
        "Finally fixed the flaky test. It was a clock, it is always a clock.",
        "Morning ride along the river, fog still on the water.",
        "Reading a paper on stream processing with my coffee. Watermarks are subtle.",
        "Our library opened a repair café today. Brought a lamp, left with a working lamp.",
        "Sourdough attempt number six. The crumb is getting there.",
        "Gave a talk about federated timelines; slides are up.",
        "Rain all day, so: soup, a novel, and an early night.",
        "Small release today: fewer allocations, same behaviour.",
    ],
    "de": [
        "Heute mit dem Rad zur Arbeit, zwölf Kilometer Gegenwind.",
        "Endlich den Keller aufgeräumt. Drei Kisten Kabel, keine passt.",
        "Der Herbst im Stadtpark ist dieses Jahr besonders bunt.",
        "Neue Version unseres Tools ist raus, danke an alle Mitwirkenden!",
        "Sonntagsfrühstück mit frischen Brötchen vom Bäcker an der Ecke.",
        "Wer kennt ein gutes Buch über Datenbanken für Einsteiger?",
    ],
    "fr": [
        "Marché du samedi : potirons, pommes et une conversation sur le temps.",
        "Je relis mes notes de conférence, il y a de bonnes idées à creuser.",
        "Premier café en terrasse depuis des semaines, le soleil est revenu.",
        "Petit atelier photo ce soir au club, thème : reflets.",
        "Le train avait vingt minutes de retard, j'ai fini mon livre.",
    ],
    "pt": [
        "Caminhada na serra hoje de manhã, o nevoeiro levantou ao meio-dia.",
        "Terminei o primeiro rascunho do artigo. Agora, rever tudo.",
        "Receita de bolo de laranja da minha avó, testada e aprovada.",
        "O concerto de ontem foi lindo, a acústica da igreja ajuda muito.",
        "Alguém recomenda uma boa câmara analógica usada?",
    ],
    "es": [
        "Hoy toca huerto: tomates fuera, ajos dentro.",
        "Publicamos la traducción al español de la documentación.",
        "Paseo en bici por la costa, el viento a favor por una vez.",
        "Leyendo poesía en el metro, la mejor hora del día.",
    ],
    "ja": [
        "今日は朝から図書館で作業。静かで集中できた。",
        "新しいレンズで紅葉を撮りに行きました。",
        "週末は友達とラーメン屋めぐり。三軒目でギブアップ。",
        "小さなライブラリをリリースしました。フィードバック歓迎です。",
    ],
    "nl": [
        "Fietsen door de polder, wind van voren, zoals altijd.",
        "Vandaag de eerste pompoensoep van het seizoen gemaakt.",
        "Mooie lezing over open data bij de bibliotheek vanavond.",
    ],
    "sv": [
        "Första frosten i natt, trädgården glittrar.",
        "Fika med kollegorna och en lång diskussion om tangentbord.",
        "Släppte en ny version av mitt lilla verktyg idag.",
    ],
}
REPLIES = {
    "en": ["Thanks, that helps a lot!", "Same here, what fixed it for you?", "Congratulations!", "Oh, I did not know that."],
    "de": ["Danke, das hilft!", "Geht mir genauso.", "Glückwunsch!", "Gute Frage, das würde mich auch interessieren."],
    "fr": ["Merci beaucoup !", "Pareil de mon côté.", "Bravo !", "Bonne idée, je note."],
    "pt": ["Obrigada, ajudou muito!", "Parabéns!", "Também quero saber."],
    "es": ["¡Gracias!", "¡Enhorabuena!", "A mí me pasa lo mismo."],
    "ja": ["ありがとうございます！", "おめでとうございます！", "私もそう思います。"],
    "nl": ["Dank je!", "Gefeliciteerd!"],
    "sv": ["Tack!", "Grattis!"],
}
THREAD = {
    "en": "2/ and the longer version of that, for those who asked.",
    "de": "2/ und die längere Fassung für alle, die gefragt haben.",
    "fr": "2/ et la version longue, pour celles et ceux qui ont demandé.",
    "pt": "2/ e a versão longa, para quem perguntou.",
    "es": "2/ y la versión larga, para quien preguntó.",
    "ja": "2/ 詳しく知りたい方のために続きです。",
    "nl": "2/ en de lange versie, voor wie erom vroeg.",
    "sv": "2/ och den längre versionen, för den som frågade.",
}
LINKS = ["https://blog.example/posts/watermarks", "https://news.example/2026/10/rail", "https://docs.example.org/guide",
         "https://www.video.example/watch?v=42", "https://photos.example.net/albums/autumn"]

# Invented people: user, server, display name, languages (weights), applications,
# tags, active hours (UTC), posts weight, bio.
PEOPLE = [
    ("ada", "social.example", "Ada Lindqvist", {"en": 6, "sv": 3}, ["Ivory", "Web"], ["rustlang", "opensource", "cycling"], range(6, 22), 5, "Compilers by day, bicycles by night."),
    ("bruno", "toot.example.net", "Bruno Ferraz 🌿", {"pt": 7, "en": 2}, ["Tusky"], ["photography", "hiking", "analog"], range(8, 23), 4, "Fotografia analógica e caminhadas."),
    ("chiyo", "fedi.example.org", "Chiyo Sato", {"ja": 8, "en": 2}, ["Ice Cubes", "Web"], ["photography", "books", "ramen"], list(range(0, 14)), 4, "東京在住。写真と本。"),
    ("dmitri", "masto.example.dev", "Dmitri Volkov", {"en": 5, "de": 2}, ["Elk"], ["dataengineering", "kafka", "sqlite"], range(7, 19), 4, "Streams, logs and the occasional database."),
    ("elin", "social.example", "Elin Sundqvist", {"sv": 5, "en": 3}, ["Mona", "Web"], ["gardening", "books"], range(5, 21), 3, "Trädgård, böcker och kaffe."),
    ("farid", "toot.example.net", "Farid Haddad", {"fr": 6, "en": 2}, ["Fedilab"], ["music", "concerts", "jazz"], range(10, 24), 3, "Musicien, parfois photographe."),
    ("grace", "fedi.example.org", "Grace Okafor", {"en": 8}, ["Phanpy", "Web"], ["opensource", "accessibility", "fediverse"], range(12, 24), 5, "Accessibility advocate. She/her."),
    ("hugo", "masto.example.dev", "Hugo van Dijk", {"nl": 6, "en": 3}, ["Tusky", "Web"], ["cycling", "opendata"], range(6, 20), 3, "Fietser, datanerd."),
    ("ines", "social.example", "Inês Carvalho", {"pt": 5, "es": 3, "en": 1}, ["Web"], ["poetry", "books", "music"], range(9, 23), 3, "Poesia, livros e concertos."),
    ("jun", "toot.example.net", "Jun Takahashi", {"ja": 6, "en": 3}, ["Ice Cubes"], ["rustlang", "opensource", "keyboards"], list(range(0, 10)) + list(range(22, 24)), 4, "ライブラリ作者。Rust。"),
    ("lucia", "fedi.example.org", "Lucía Moreno", {"es": 7, "en": 1}, ["Elk", "Web"], ["gardening", "cooking", "poetry"], range(8, 22), 3, "Huerto urbano y poesía."),
    ("weatherbot", "masto.example.dev", "Weather Bot ☁️", {"en": 1}, ["Web"], ["weather"], [6], 2, "Automated daily weather summary. #bot"),
    ("nora", "social.example", "Nora Quiet", {"de": 1}, ["Web"], ["privacy"], range(8, 20), 2, "Bitte nicht archivieren. #nobot"),
]

ids = {}
def account(i, p):
    user, server, name, *_rest = p
    bio = p[-1]
    return {
        "acct": f"{user}@{server}", "avatar": f"https://{server}/system/accounts/avatars/{i}/original/avatar.png",
        "avatar_static": f"https://{server}/system/accounts/avatars/{i}/original/avatar.png", "bot": user.endswith("bot"),
        "created_at": "2022-11-05T00:00:00.000Z", "discoverable": True, "display_name": name, "emojis": [],
        "fields": [], "followers_count": 100 + 37 * i, "following_count": 50 + 11 * i, "group": False,
        "header": f"https://{server}/headers/original/missing.png", "header_static": f"https://{server}/headers/original/missing.png",
        "hide_collections": False, "id": f"10900000000000{i:04d}", "indexable": True, "last_status_at": "2026-11-15",
        "locked": False, "noindex": False, "note": f"<p>{bio}</p>", "roles": [], "statuses_count": 500 + 97 * i,
        "uri": f"https://{server}/users/{user}", "url": f"https://{server}/@{user}", "username": user,
    }

ACCOUNTS = [account(i + 1, p) for i, p in enumerate(PEOPLE)]

def link_html(u):
    scheme, rest = u.split("://", 1)
    return (f'<a href="{u}" rel="nofollow noopener" target="_blank"><span class="invisible">{scheme}://</span>'
            f'<span class="">{rest}</span><span class="invisible"></span></a>')

def tag_html(server, t):
    return f'<a href="https://{server}/tags/{t}" class="mention hashtag" rel="tag">#<span>{t}</span></a>'

def mention_html(acct):
    user, server = acct.split("@")
    return f'<span class="h-card"><a href="https://{server}/@{user}" class="u-url mention">@<span>{user}</span></a></span>'

def pick(weights):
    keys = list(weights)
    return rng.choices(keys, [weights[k] for k in keys])[0]

seq = 0
def status_id(t):
    global seq
    seq += 1
    return str((int(t.timestamp() * 1000) << 16) + seq)

def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

def base(pi, t, sid):
    p, acc = PEOPLE[pi], ACCOUNTS[pi]
    user, server = p[0], p[1]
    return {
        "account": acc, "application": {"name": rng.choice(p[4]), "website": None}, "bookmarked": False, "card": None,
        "content": "", "created_at": iso(t), "edited_at": None, "emojis": [], "favourited": False, "favourites_count": 0,
        "filtered": [], "id": sid, "in_reply_to_account_id": None, "in_reply_to_id": None, "language": None,
        "media_attachments": [], "mentions": [], "muted": False, "poll": None, "quotes_count": 0, "reblog": None,
        "reblogged": False, "reblogs_count": 0, "replies_count": 0, "sensitive": False, "spoiler_text": "", "tags": [],
        "uri": f"https://{server}/users/{user}/statuses/{sid}", "url": f"https://{server}/@{user}/{sid}",
        "visibility": "public",
    }

def moment(pi, day):
    hours = list(PEOPLE[pi][6])
    return START + timedelta(days=day, hours=rng.choice(hours), minutes=rng.randrange(60), seconds=rng.randrange(60),
                             milliseconds=rng.randrange(1000))

posts = []
weights = [p[7] for p in PEOPLE]
while len(posts) < COUNT:
    pi = rng.choices(range(len(PEOPLE)), weights)[0]
    p = PEOPLE[pi]
    user, server = p[0], p[1]
    if user == "weatherbot":
        day = rng.randrange(DAYS)
        t = START + timedelta(days=day, hours=6, minutes=0, seconds=rng.randrange(5))
        s = base(pi, t, status_id(t))
        s["language"] = "en"
        s["content"] = f"<p>Forecast for {t.strftime('%A %d %B')}: {rng.choice(['sunny', 'cloudy', 'showers', 'fog, then sun'])}, {rng.randrange(3, 16)}°C. {tag_html(server, 'weather')}</p>"
        s["tags"] = [{"name": "weather", "url": f"https://{server}/tags/weather"}]
        posts.append(s)
        continue
    t = moment(pi, rng.randrange(DAYS))
    sid = status_id(t)
    s = base(pi, t, sid)
    roll = rng.random()
    earlier = [q for q in posts if q["account"]["acct"] != f"{user}@{server}" and not q["reblog"]
               and q["visibility"] == "public" and q["created_at"] < iso(t)]
    if roll < 0.12 and earlier:
        # A boost: an empty wrapper around someone else's post.
        orig = rng.choice(earlier)
        s.update({"uri": f"https://{server}/users/{user}/statuses/{sid}/activity",
                  "url": f"https://{server}/users/{user}/statuses/{sid}/activity", "reblog": orig, "application": None})
        posts.append(s)
        continue
    lang = pick(p[3])
    s["language"] = lang
    parts = [rng.choice(TEXT[lang])]
    tags = rng.sample(p[5], k=min(len(p[5]), rng.choice([0, 1, 1, 2])))
    if rng.random() < 0.2:
        parts.append(link_html(rng.choice(LINKS)))
    if roll < 0.27 and earlier:
        other = rng.choice(earlier[-30:])
        oacct = other["account"]
        s["in_reply_to_id"], s["in_reply_to_account_id"] = other["id"], oacct["id"]
        s["mentions"] = [{"acct": oacct["acct"], "id": oacct["id"], "url": oacct["url"], "username": oacct["username"]}]
        parts = [mention_html(oacct["acct"]), rng.choice(REPLIES[lang])]
        tags = []
    for tg in tags:
        parts.append(tag_html(server, tg))
    s["tags"] = [{"name": tg, "url": f"https://{server}/tags/{tg}"} for tg in tags]
    s["content"] = "<p>" + " ".join(parts) + "</p>"
    if rng.random() < 0.15:
        s["media_attachments"] = [{"blurhash": None, "description": "A photo: " + rng.choice(["autumn trees", "a bicycle", "a bowl of soup", "a train window", "a bookshelf"]),
                                   "id": sid + "1", "meta": {}, "preview_remote_url": None, "preview_url": f"https://files.{server}/media/{sid}/small.jpg",
                                   "remote_url": None, "text_url": None, "type": "image", "url": f"https://files.{server}/media/{sid}/original.jpg"}]
    if rng.random() < 0.06:
        s["spoiler_text"] = rng.choice(["food", "politics", "eye contact", "spoilers"])
        s["sensitive"] = True
    if rng.random() < 0.04:
        s["poll"] = {"emojis": [], "expired": True, "expires_at": iso(t + timedelta(days=1)), "id": sid + "9", "multiple": False,
                     "options": [{"title": "yes", "votes_count": rng.randrange(40)}, {"title": "no", "votes_count": rng.randrange(40)}],
                     "voters_count": None, "votes_count": None}
    if rng.random() < 0.05:
        s["edited_at"] = iso(t + timedelta(minutes=rng.randrange(2, 30)))
    if rng.random() < 0.05:
        s["visibility"] = rng.choice(["unlisted", "private", "direct"])
    s["replies_count"] = rng.randrange(4)
    s["reblogs_count"] = rng.randrange(6)
    s["favourites_count"] = rng.randrange(25)
    posts.append(s)
    # Now and then a thread: the author's own reply a few minutes later.
    if not s["in_reply_to_id"] and rng.random() < 0.15:
        t2 = t + timedelta(minutes=rng.randrange(1, 9), seconds=rng.randrange(60))
        s2 = base(pi, t2, status_id(t2))
        s2["application"] = s["application"]
        s2.update({"language": lang, "in_reply_to_id": sid, "in_reply_to_account_id": s["account"]["id"],
                   "content": f"<p>{THREAD[lang]}</p>"})
        posts.append(s2)

posts.sort(key=lambda s: s["created_at"])
for s in posts[:COUNT]:
    print(json.dumps(s, ensure_ascii=False, sort_keys=True))
