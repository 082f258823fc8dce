"""A toy RL task for tests: the word-level tokenizer's responses are rewarded for the share of words that equal
the gold word (rescaled to [-1, 1]). A random tiny model starts near -1 (1 word in 253 by chance)."""


def target_share(responses, golds):
    out = []
    for response, gold in zip(responses, golds):
        words = response.split()
        out.append(2.0 * sum(w == gold for w in words) / len(words) - 1.0 if words else -1.0)
    return out


def word_count(responses, golds):
    """Longer responses score higher (a dense, varying reward: every step updates the policy)."""
    return [min(len(r.split()), 20) / 10.0 - 1.0 for r in responses]
