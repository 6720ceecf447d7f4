"""Padding and CPU step time of plain vs length-bucketed SQuAD batches, side by side in one run (issue 29):
`python -m reproduce.measure.squad_buckets [pairs]` (default 10 alternated pairs of steps).

On the shipped dev set (47 articles), paper-size BiDAF (batch 60, context cap 400, random vectors: the
step time does not depend on them), forward + backward + Adam. The two arms alternate step by step, so
that whatever else loads the machine hits both alike: the ratio, not the seconds, is the result. Prints
JSON (docs/USAGE.md quotes it).
"""

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from lightning_modules.squad.bidaf import BiDAF
from lightning_modules.squad.squad_data import SquadDataModule, collate_squad, padding_fraction


def main(pairs: int) -> dict:


    dm = SquadDataModule(source="embedded", dev_split_articles=47, max_context_tokens=400, max_question_tokens=30,
                         batch_size=60, word_vectors="random", length_buckets=100, shuffle_seed=1)
    dm.setup()
    lengths = dm.train_lengths()
    orders = {}
    for name, pool in (("plain", None), ("bucketed", 100)):
        dm._train_sampler.configure(lengths, 60, pool, 1)
        orders[name] = list(dm._train_sampler)
    batches = {k: [o[i:i + 60] for i in range(0, len(o), 60)] for k, o in orders.items()}
    qlen = [len(t) for t in dm.train_set.rows["question_tokens"]]
    out = {"questions": len(lengths), "batches": len(batches["plain"]), "torch_threads": torch.get_num_threads()}
    for k, bs in batches.items():
        tc = [max(lengths[i] for i in b) for b in bs]
        tq = [max(qlen[i] for i in b) for b in bs]
        out[k] = {"padding_fraction": padding_fraction(lengths, bs), "mean_batch_context_len": statistics.mean(tc),
                  "mean_batch_question_len": statistics.mean(tq),
                  "lstm_layer_steps_per_train_step": statistics.mean(8 * c + 2 * q for c, q in zip(tc, tq))}
    torch.manual_seed(0)
    model = BiDAF(dm.word_vocab_size, dm.char_vocab_size, 100, 8, 100, 5, 100, 2, 0.2, gated=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch):
        t0 = time.perf_counter()
        start, end = model(batch)
        loss = F.cross_entropy(start, batch["start"]) + F.cross_entropy(end, batch["end"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    collated = {k: [collate_squad([dm.train_set[i] for i in b]) for b in bs[:pairs + 1]] for k, bs in batches.items()}
    for k in collated:  # warm-up
        step(collated[k][0])
    times = {"plain": [], "bucketed": []}
    for i in range(1, pairs + 1):  # alternating, so load on the machine hits both alike
        for k in ("plain", "bucketed"):
            times[k].append(step(collated[k][i]))
    for k in times:
        out[k]["step_s_median"] = statistics.median(times[k])
        out[k]["step_s"] = [round(t, 3) for t in times[k]]
        out[k]["sampled_padding_fraction"] = padding_fraction(lengths, batches[k][1:pairs + 1])
    out["ratio_plain_over_bucketed_step"] = out["plain"]["step_s_median"] / out["bucketed"]["step_s_median"]
    return out


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10), indent=1))
