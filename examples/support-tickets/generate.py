"""python examples/support-tickets/generate.py

Deterministic generator for the support-tickets example task.

Each example is a customer-support message about one of six fictional "Nimbus" products; the target is a
JSON object with keys category, priority, product and summary. Every label field is a fixed function of a
cue in the text (the issue description, the product name or alias, the priority phrase), so the task is
learnable from a few hundred examples, while greetings, details, sentence order and sign-offs vary so the
model cannot shortcut on surface form.

Options: --seed (default 7) and --out (default: this folder). The same seed always gives byte-identical
train.jsonl (600), validation.jsonl (100) and test.jsonl (150).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPLIT_SIZES: dict[str, int] = {"train": 600, "validation": 100, "test": 150}
MIN_WORDS, MAX_WORDS = 25, 70
ALIAS_RATE = 0.4

CATEGORIES = ("billing", "bug", "account", "feature_request", "how_to")
PRIORITIES = ("low", "medium", "high", "urgent")

SYSTEM_PROMPT = (
    "You triage support tickets for Nimbus software. Reply with only a JSON object with keys "
    "category, priority, product, summary. "
    "category: billing, bug, account, feature_request, how_to. "
    "priority: low, medium, high, urgent. "
    "product: nimbus-sync, nimbus-pay, nimbus-mail, nimbus-mobile, nimbus-analytics, nimbus-id. "
    "summary: a short lowercase description of the issue."
)


@dataclass(frozen=True)
class Product:
    """A product id, the display name customers write, and aliases only the knowledge base explains."""

    pid: str
    name: str
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Issue:
    """One issue type: its category, canonical summary, the products it applies to, and wordings."""

    category: str
    summary: str
    products: tuple[str, ...]
    descriptions: tuple[str, ...]


PRODUCTS: dict[str, Product] = {
    p.pid: p
    for p in (
        Product(
            "nimbus-sync",
            "Nimbus Sync",
            ("the desktop sync client", "the shared drive", "the backup folder", "the file uploader"),
        ),
        Product(
            "nimbus-pay",
            "Nimbus Pay",
            (
                "the invoice builder",
                "the payments dashboard",
                "the payments hub",
                "the recurring invoices tool",
            ),
        ),
        Product(
            "nimbus-mail",
            "Nimbus Mail",
            ("the shared inbox", "the newsletter editor", "the email campaigns tool", "the mail add-in"),
        ),
        Product(
            "nimbus-mobile",
            "Nimbus Mobile",
            ("the iPhone app", "the Android app", "the phone app", "the tablet app"),
        ),
        Product(
            "nimbus-analytics",
            "Nimbus Analytics",
            ("the reports dashboard", "the KPI board", "the data explorer", "the metrics view"),
        ),
        Product(
            "nimbus-id",
            "Nimbus ID",
            ("single sign-on", "the SSO portal", "the admin directory", "the login page"),
        ),
    )
}
ALL_PRODUCTS = tuple(PRODUCTS)
SYNC, PAY, MAIL, MOBILE, ANALYTICS, ID = ALL_PRODUCTS

BILLING_ISSUES = (
    Issue(
        "billing",
        "charged twice for one payment",
        (PAY,),
        (
            "A customer paid one invoice through {p} and their card was charged twice for the same amount.",
            "{p} took the same payment twice from one of our clients, so there is a double charge to undo.",
            "We see two identical charges for a single invoice in {p}. The client only clicked pay once.",
            "One payment went through twice in {p} and our client asks why their card shows a double charge.",
        ),
    ),
    Issue(
        "billing",
        "refund not received",
        ALL_PRODUCTS,
        (
            "I cancelled our subscription to {p} three weeks ago and was promised a refund that never came.",
            "Support approved a refund for {p} earlier this month, yet nothing shows up on our statement.",
            "We downgraded {p} and were told the difference would be refunded. We are still waiting for it.",
            "Where is my refund? The cancellation of {p} was confirmed but the credit never reached us.",
        ),
    ),
    Issue(
        "billing",
        "invoice shows wrong amount",
        (PAY,),
        (
            "An invoice generated in {p} shows a total that does not match the line items we entered.",
            "{p} keeps calculating the tax wrong, so the invoice amount our customer sees is too high.",
            "The amount on the invoice from {p} is off by a few hundred, though every line item looks right.",
        ),
    ),
    Issue(
        "billing",
        "card declined on renewal",
        ALL_PRODUCTS,
        (
            "Our annual renewal for {p} failed because the card was declined, though it works elsewhere.",
            "We got an email saying the renewal payment for {p} was declined. The card is perfectly valid.",
            "Each time the subscription for {p} tries to renew, it fails with a card declined error.",
        ),
    ),
    Issue(
        "billing",
        "need copy of past invoice",
        ALL_PRODUCTS,
        (
            "Our accountant needs a PDF copy of last quarter's invoice for {p} and I cannot find it.",
            "Could you send me the March invoice for {p}? We lost the original email with it.",
            "I need a copy of an older invoice for {p} for our taxes, but I only see the latest one.",
        ),
    ),
    Issue(
        "billing",
        "unexpected price increase",
        ALL_PRODUCTS,
        (
            "Our bill for {p} went up this month without notice, and nobody on our side changed the plan.",
            "Why did the price of {p} jump? We were charged more than usual and never agreed to a new tier.",
            "The latest charge for {p} is much higher than before. I saw no notice about a price change.",
        ),
    ),
)

BUG_ISSUES = (
    Issue(
        "bug",
        "app crashes on launch",
        (MOBILE, SYNC, MAIL),
        (
            "{p} crashes right after I open it. The splash screen shows for a second and then it closes.",
            "Every time I start {p} it quits immediately, before I can even see the main screen.",
            "Since the last update, opening {p} just makes it crash straight away.",
            "{p} will not stay open. It shuts down the moment it launches, even after a reinstall.",
        ),
    ),
    Issue(
        "bug",
        "sync stops after large upload",
        (SYNC, MOBILE),
        (
            "Syncing in {p} stops completely whenever someone uploads a big file, like a video over 2 GB.",
            "After I add a large upload to {p}, nothing else syncs until I restart everything.",
            "{p} gets stuck on one large file and then no other changes sync at all.",
            "Large uploads seem to break {p}: once a big file is added, syncing freezes for hours.",
        ),
    ),
    Issue(
        "bug",
        "emails stuck in outbox",
        (MAIL, MOBILE),
        (
            "Messages I send from {p} sit in the outbox and never actually go out.",
            "Our emails are stuck in the outbox of {p}. Recipients say they never got anything.",
            "{p} shows outgoing emails as queued forever. Nothing ever leaves the outbox.",
        ),
    ),
    Issue(
        "bug",
        "dashboard charts not loading",
        (ANALYTICS, PAY),
        (
            "The charts in {p} just show a spinning wheel and never load any data.",
            "None of the graphs load in {p}; the panels stay blank no matter how long I wait.",
            "When I open {p}, the chart panels stay empty and eventually show a loading error.",
        ),
    ),
    Issue(
        "bug",
        "export produces empty file",
        (ANALYTICS, PAY, MAIL),
        (
            "When I export data from {p}, the downloaded CSV file is completely empty.",
            "Exports from {p} finish without errors, but the file has only headers and no rows.",
            "{p} gives me a blank file every time I try to export, even for ranges that clearly have data.",
        ),
    ),
    Issue(
        "bug",
        "notifications not arriving",
        (MOBILE, MAIL, SYNC),
        (
            "Notifications from {p} stopped arriving, so we miss updates we used to see.",
            "I no longer get any alerts from {p}, even though notifications are turned on in settings.",
            "{p} used to notify me about changes, but for the past few days no notifications come through.",
        ),
    ),
)

ACCOUNT_ISSUES = (
    Issue(
        "account",
        "cannot reset password",
        (ID, MAIL, PAY, ANALYTICS),
        (
            "I forgot my password for {p} and the reset link never arrives in my inbox.",
            "The password reset in {p} says the link is expired every single time I click it.",
            "I cannot reset my password for {p}. The form accepts my email but nothing happens after that.",
            "Trying to reset the password on {p} just loops back to the same page without changing anything.",
        ),
    ),
    Issue(
        "account",
        "account locked after failed logins",
        (ID, MAIL, PAY, ANALYTICS, SYNC),
        (
            "My account on {p} got locked after a few wrong password attempts and there is no unlock option.",
            "{p} locked me out after too many failed sign-in attempts, and it still says locked hours later.",
            "After mistyping my password three times, {p} locked my account and I cannot get back in.",
        ),
    ),
    Issue(
        "account",
        "change account email address",
        ALL_PRODUCTS,
        (
            "I need to change the email address on my account for {p} because we moved to a new domain.",
            "Please switch the email on our account in {p} to my new work address; the old one is closing.",
            "The email tied to my login for {p} is outdated. Please change it to my new address.",
        ),
    ),
    Issue(
        "account",
        "delete my account",
        ALL_PRODUCTS,
        (
            "Please delete my account and all my data from {p}. I no longer use it.",
            "I want my account in {p} permanently removed, including any stored data.",
            "We are moving to another tool, so please delete our account for {p} completely.",
        ),
    ),
    Issue(
        "account",
        "add seat for new teammate",
        ALL_PRODUCTS,
        (
            "We hired someone and I need to add a seat for her in {p}, but the invite button is greyed out.",
            "How do I get another user seat in {p}? A new teammate starts on Monday and needs access.",
            "I am trying to add a new colleague to our team in {p} and it says we have no seats left.",
        ),
    ),
    Issue(
        "account",
        "two-factor code not accepted",
        (ID, MOBILE),
        (
            "{p} keeps rejecting my two-factor code even though I type it in before it expires.",
            "The six-digit verification code from my authenticator is never accepted by {p}.",
            "Every 2FA code I enter in {p} is marked invalid, so I cannot finish signing in.",
        ),
    ),
)

FEATURE_ISSUES = (
    Issue(
        "feature_request",
        "request dark mode",
        (MOBILE, MAIL, ANALYTICS),
        (
            "Could you add a dark mode to {p}? The bright white screen is hard on the eyes at night.",
            "It would be great if {p} had a dark theme. Most of our staff works late in the evening.",
            "Please consider a dark mode option for {p}; the light interface is tiring after a long day.",
        ),
    ),
    Issue(
        "feature_request",
        "request offline mode",
        (MOBILE, SYNC),
        (
            "It would help a lot if {p} worked offline, so we can keep going on flights and trains.",
            "Please add an offline mode to {p}. At the moment nothing works without a connection.",
            "Any plans to let {p} work without internet? Our field staff often have no signal.",
        ),
    ),
    Issue(
        "feature_request",
        "request custom report templates",
        (ANALYTICS,),
        (
            "We would love to save our own report templates in {p} instead of rebuilding them every week.",
            "Please let us create custom report templates in {p} that everyone in the company can reuse.",
            "Could {p} support reusable templates for reports? We build the same views over and over.",
        ),
    ),
    Issue(
        "feature_request",
        "request bulk invoice sending",
        (PAY,),
        (
            "It would save us hours if {p} could send a batch of invoices at once instead of one by one.",
            "Please add a way to send many invoices in bulk from {p}. We bill two hundred clients a month.",
            "Could {p} get a bulk send option? Sending each invoice separately takes forever.",
        ),
    ),
    Issue(
        "feature_request",
        "request scim user provisioning",
        (ID,),
        (
            "We would like {p} to support SCIM so new hires get accounts automatically from our HR system.",
            "Please add SCIM provisioning to {p}; creating every user by hand does not scale for us.",
            "Is user provisioning through SCIM on the roadmap for {p}? It would save our IT staff a lot.",
        ),
    ),
    Issue(
        "feature_request",
        "request selective folder sync",
        (SYNC,),
        (
            "Could {p} let me choose which folders to sync? My laptop does not have room for everything.",
            "Please add selective sync to {p} so we can skip the huge archive folders.",
            "It would be nice if {p} let each person pick only the folders they need on their machine.",
        ),
    ),
)

HOW_TO_ISSUES = (
    Issue(
        "how_to",
        "how to export reports",
        (ANALYTICS, PAY),
        (
            "How do I export a report from {p} to a spreadsheet or PDF? I cannot find the option.",
            "What is the right way to download our monthly reports out of {p}?",
            "I need to share a report with my manager. How can I export it from {p}?",
        ),
    ),
    Issue(
        "how_to",
        "how to set up sso",
        (ID,),
        (
            "What are the steps to connect our identity provider to {p} so staff log in with work accounts?",
            "How do I configure {p} so our employees sign in with their corporate credentials?",
            "Is there a guide for linking our company directory to {p}? We want one login for everything.",
        ),
    ),
    Issue(
        "how_to",
        "how to share a folder",
        (SYNC,),
        (
            "How do I share a folder in {p} with someone outside our company?",
            "What is the way to give a colleague access to one of my folders in {p}?",
            "Can you explain how folder sharing works in {p}? I want a client to see a single folder.",
        ),
    ),
    Issue(
        "how_to",
        "how to add email signature",
        (MAIL,),
        (
            "Where do I set up an email signature in {p}? I want my title and logo under every message.",
            "How can I add a signature to the emails I send from {p}?",
            "Is there a way to create a shared signature for everyone who sends messages from {p}?",
        ),
    ),
    Issue(
        "how_to",
        "how to issue partial refund",
        (PAY,),
        (
            "How do I refund only part of a payment in {p}? The customer returned one item out of three.",
            "What are the steps to issue a partial refund to a client through {p}?",
            "Can {p} refund half of an invoice, and if so, where is that option?",
        ),
    ),
    Issue(
        "how_to",
        "how to sync calendar",
        (MOBILE,),
        (
            "How do I get my work calendar to show up in {p}?",
            "What settings do I need so {p} syncs with my calendar? I want meetings to appear there too.",
            "Can you walk me through connecting a calendar to {p}? I would like to see my appointments.",
        ),
    ),
)

ISSUES: tuple[Issue, ...] = BILLING_ISSUES + BUG_ISSUES + ACCOUNT_ISSUES + FEATURE_ISSUES + HOW_TO_ISSUES

PRIORITY_CUES: dict[str, tuple[str, ...]] = {
    "urgent": (
        "Our whole team is blocked.",
        "Production is down because of this.",
        "This is costing us money right now.",
        "Nobody on our side can work until this is resolved.",
        "Our customers are affected as we speak.",
    ),
    "high": (
        "We need this fixed today.",
        "Please treat this as high priority.",
        "Could someone look at this within the next few hours?",
        "This needs to be sorted before our deadline tomorrow.",
        "We need an answer by the end of today.",
    ),
    "medium": (
        "Would appreciate a fix this week.",
        "Sometime this week would be great.",
        "It is annoying, but we have a workaround for now.",
        "Please look into it over the next few days.",
        "A reply in the next couple of days would be fine.",
    ),
    "low": (
        "No rush on this.",
        "Whenever you get a chance.",
        "Low priority, just flagging it.",
        "No pressure at all, just letting you know.",
        "This can wait until you have some spare time.",
    ),
}

GREETINGS = (
    "",
    "",
    "Hi,",
    "Hello,",
    "Hi team,",
    "Hello support,",
    "Hey there,",
    "Good morning,",
    "Dear support team,",
)
NAMES = (
    "Marta",
    "Tomasz",
    "Priya",
    "Jonas",
    "Aiko",
    "Lena",
    "Omar",
    "Sofia",
    "Ravi",
    "Greta",
    "Luis",
    "Nadia",
)
TEAMS = (
    "the finance team",
    "operations",
    "a small design studio",
    "the IT department",
    "a local bakery chain",
)
SIGN_OFFS = ("Thanks, {name}", "Best, {name}", "Cheers, {name}", "Regards, {name}", "Thank you!", "Thanks.")
ENVIRONMENTS = ("Windows 11", "macOS Sonoma", "Ubuntu 22.04", "Chrome on Windows", "Firefox on a Mac", "Edge")
DEVICES = ("an iPhone 15", "a Pixel 8", "an older Android tablet", "a Galaxy S23")
FILLERS = (
    "We have been customers for about two years.",
    "Let me know if you need any more details from me.",
    "I checked the help center first but could not find an answer.",
    "We are a small agency with about a dozen people.",
    "I can send screenshots if that helps.",
)


def capitalize_first(text: str) -> str:
    """Upper-case only the first character, so aliases like "the iPhone app" keep their inner casing."""
    return text[:1].upper() + text[1:]


def product_mention(rng: random.Random, product: Product) -> str:
    """Name the product directly or, about 40% of the time, by an alias only the knowledge base explains."""
    if rng.random() < ALIAS_RATE:
        return rng.choice(product.aliases)
    return product.name


def detail_sentence(rng: random.Random, issue: Issue, pid: str) -> str:
    """A plausible but label-neutral detail: an invoice or workspace reference, or the device in use."""
    kind = rng.choice(("reference", "environment"))
    if kind == "reference" and issue.category == "billing":
        return f"The invoice reference is INV-{rng.randint(10000, 99999)}."
    if kind == "reference":
        return f"Our workspace ID is WS-{rng.randint(1000, 9999)}."
    if pid == MOBILE:
        return f"I am using {rng.choice(DEVICES)}."
    return rng.choice(("This is on {env}.", "I am using {env}.")).format(env=rng.choice(ENVIRONMENTS))


def introduction(rng: random.Random, name: str | None) -> list[str]:
    """When the customer is named, sometimes open the body with who is writing."""
    if name is not None and rng.random() < 0.5:
        return [f"This is {name} from {rng.choice(TEAMS)}."]
    return []


def closing(rng: random.Random, name: str | None) -> str:
    """Optional sign-off; named sign-offs only appear when the ticket has a customer name."""
    options = SIGN_OFFS if name is not None else tuple(s for s in SIGN_OFFS if "{name}" not in s)
    if rng.random() < 0.3:
        return ""
    return rng.choice(options).format(name=name)


def body_sentences(rng: random.Random, issue: Issue, pid: str, priority: str) -> list[str]:
    """Description, optional detail and filler, with the single priority cue at a varied position."""
    mention = product_mention(rng, PRODUCTS[pid])
    body = [capitalize_first(rng.choice(issue.descriptions).format(p=mention))]
    if rng.random() < 0.6:
        body.append(detail_sentence(rng, issue, pid))
    if rng.random() < 0.3:
        body.append(rng.choice(FILLERS))
    position = rng.choices((0, 1, len(body)), weights=(15, 50, 35))[0]
    body.insert(position, rng.choice(PRIORITY_CUES[priority]))
    return body


def pad_body(rng: random.Random, body: list[str], other_words: int) -> list[str]:
    """Append neutral filler until greeting, body and sign-off together reach the minimum word count."""
    unused = [f for f in FILLERS if f not in body]
    rng.shuffle(unused)
    while other_words + word_count(" ".join(body)) < MIN_WORDS and unused:
        body.append(unused.pop())
    return body


def word_count(text: str) -> int:
    """Whitespace word count, the measure used for the 25-70 word target."""
    return len(text.split())


def render_ticket(rng: random.Random, issue: Issue, priority: str) -> tuple[str, dict[str, str]]:
    """Assemble one ticket text and its label; the label depends only on issue, product and priority."""
    pid = rng.choice(issue.products)
    name = rng.choice(NAMES) if rng.random() < 0.5 else None
    greeting = rng.choice(GREETINGS)
    body = introduction(rng, name) + body_sentences(rng, issue, pid, priority)
    sign_off = closing(rng, name)
    body = pad_body(rng, body, word_count(f"{greeting} {sign_off}"))
    text = "\n".join(part for part in (greeting, " ".join(body), sign_off) if part)
    label = {"category": issue.category, "priority": priority, "product": pid, "summary": issue.summary}
    return text, label


def schedule(rng: random.Random, size: int) -> list[tuple[Issue, str]]:
    """Balanced plan: shuffled blocks of all issue types and all priorities, so every split covers both."""
    issues: list[Issue] = []
    while len(issues) < size:
        block = list(ISSUES)
        rng.shuffle(block)
        issues.extend(block)
    priorities: list[str] = []
    while len(priorities) < size:
        block = list(PRIORITIES)
        rng.shuffle(block)
        priorities.extend(block)
    return list(zip(issues[:size], priorities[:size], strict=True))


def draw_unique(rng: random.Random, issue: Issue, priority: str, seen: set[str]) -> dict:
    """Redraw until the text is new across all splits and within the word-count bounds."""
    while True:
        text, label = render_ticket(rng, issue, priority)
        if text not in seen and MIN_WORDS <= word_count(text) <= MAX_WORDS:
            seen.add(text)
            return to_example(text, label)


def to_example(text: str, label: dict[str, str]) -> dict:
    """OpenAI chat fine-tuning format; the assistant turn is the label as a JSON string."""
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": text},
            {"role": "assistant", "content": json.dumps(label, ensure_ascii=False)},
        ]
    }


def build_splits(seed: int) -> dict[str, list[dict]]:
    """Draw all splits from one seeded stream, sharing the seen-set so no text crosses splits."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits = {}
    for split, size in SPLIT_SIZES.items():
        splits[split] = [draw_unique(rng, issue, prio, seen) for issue, prio in schedule(rng, size)]
    check_coverage(splits["test"])
    return splits


def check_coverage(rows: list[dict]) -> None:
    """Fail loudly if the test split misses a product, category, priority or issue type."""
    labels = [json.loads(r["messages"][2]["content"]) for r in rows]
    wanted = {
        "product": set(ALL_PRODUCTS),
        "category": set(CATEGORIES),
        "priority": set(PRIORITIES),
        "summary": {i.summary for i in ISSUES},
    }
    for key, values in wanted.items():
        missing = values - {lab[key] for lab in labels}
        if missing:
            raise SystemExit(f"test split misses {key} values {sorted(missing)}; try another --seed")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write atomically (temp file in the same folder, then os.replace) so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the data files are meant to be world-readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_args() -> argparse.Namespace:
    """Command-line options: the seed and the output folder."""
    parser = argparse.ArgumentParser(description="Generate the support-tickets JSONL splits.")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    return parser.parse_args()


def main() -> None:
    """Generate and write train, validation and test splits."""
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in build_splits(args.seed).items():
        write_jsonl(args.out / f"{split}.jsonl", rows)
        print(f"wrote {len(rows)} examples to {args.out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
