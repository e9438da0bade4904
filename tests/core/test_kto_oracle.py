"""Oracle: our KTO numbers equal TRL 1.16's ``KTOTrainer`` on the same tiny model, token ids and labels.

As in ``test_dpo_oracle.py``: both sides in fp32 on the CPU, a LoRA adapter created with
``init_lora_weights=False`` (with a fresh adapter every log-ratio is 0, z0 is 0 and the loss is λ/2 whatever
the code does), the reference being the same model with the adapter off. TRL pairs each prompt with the
answer of the previous example in its batch for the KL estimate; our :func:`tokenize_labels` is given the
same rotation here (training uses :func:`mismatched_sources` instead).

Compared, for the whole batch and for parts of it, in both our batch layouts: the token ids, the loss, the
rewards and log-probs by label, z0 (TRL's ``kl``) and the gradient reaching the LoRA weights. Tolerance 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from desktop_dpo.core.dpo.batches import collate, collate_shared
from desktop_dpo.core.dpo.kto import balanced_weights, kto_loss, kto_metrics
from desktop_dpo.core.dpo.kto_batches import tokenize_labels
from desktop_dpo.core.dpo.labels import SingleLabel
from desktop_dpo.core.dpo.logps import sequence_logps
from desktop_dpo.core.dpo.tokenizing import resolve_chat_template
from tests.core.test_dpo_oracle import (  # noqa: F401  (model_dir: fixture)
    BETA,
    cpu_trainer_args,
    lora_grads,
    model_dir,
    peft_trainer,
    trl_numbers,
)

torch.set_num_threads(1)

TOL = 1e-4
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
HELLO = [{"role": "user", "content": "hello there"}]
MOON = [
    {"role": "user", "content": "Two plus two?"},
    {"role": "assistant", "content": " four"},
    {"role": "user", "content": "And the moon?"},
]
# A pick (chosen + rejected), a "both bad" pick, a rewrite and another pick: 3 desirable, 4 undesirable.
LABELS = [
    SingleLabel(1, 1, FRANCE, " Paris is the capital of France.", True, "chosen"),
    SingleLabel(1, 1, FRANCE, " The cat sat on the mat.", False, "rejected"),
    SingleLabel(2, 2, HELLO, " Two plus two is four, said the quick brown fox.", False, "both_bad"),
    SingleLabel(2, 2, HELLO, " The moon.", False, "both_bad"),
    SingleLabel(3, 3, MOON, " The moon looked at the cat.", True, "rewrite"),
    SingleLabel(4, 3, MOON, " Paris.", False, "rejected"),
    SingleLabel(4, 3, MOON, " The moon is far away.", True, "chosen"),
]
METRICS = [
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "kl",
]


def kto_trainer(folder, output_dir, desirable_weight: float, undesirable_weight: float, seed: int = 1):
    """TRL's KTOTrainer on a fresh copy of the tiny model, fp32 on the CPU, with a perturbed LoRA adapter
    (``seed`` draws it: with 1, the batch [0, 1] has a mismatched log-ratio above z0's clamp at 0)."""
    from trl import KTOConfig, KTOTrainer

    rows = [
        {
            "prompt": x.messages,
            "completion": [{"role": "assistant", "content": x.completion}],
            "label": x.desirable,
        }
        for x in LABELS
    ]
    args = KTOConfig(
        beta=BETA, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
        **cpu_trainer_args(output_dir, len(rows), seed),
    )  # fmt: skip
    return peft_trainer(KTOTrainer, folder, args, rows)


def our_numbers(model, items, layout, weights: tuple[float, float]) -> dict[str, float]:
    batch = layout(items, pad_id=0)
    model.zero_grad()
    with torch.no_grad(), model.disable_adapter():
        reference, reference_kl = sequence_logps(model, batch)
    policy, policy_kl = sequence_logps(model, batch)
    desirable = torch.tensor([x.desirable for x in items])
    out = kto_loss(
        policy, reference, policy_kl, reference_kl, desirable,
        beta=BETA, desirable_weight=weights[0], undesirable_weight=weights[1],
    )  # fmt: skip
    loss = out.losses.mean()
    loss.backward()
    numbers = kto_metrics(out, policy_chosen_logps=policy)
    numbers["loss"] = loss.item()
    return numbers


@pytest.mark.parametrize("weights", [(1.0, 1.0), balanced_weights(3, 4)], ids=["trl-defaults", "balanced"])
def test_kto_loss_rewards_kl_and_gradients_equal_trl(model_dir, tmp_path, weights):  # noqa: F811
    assert balanced_weights(3, 4) == (4 / 3, 1.0)  # 3 desirable, 4 undesirable: λ_D·3 / (λ_U·4) = 1
    trainer = kto_trainer(model_dir, tmp_path, *weights)
    tokenizer, model = trainer.processing_class, trainer.model
    trl_rows = [trainer.train_dataset[i] for i in range(len(LABELS))]

    # 1. Same token ids, the mismatched answers included (TRL's rotation by one within the batch).
    n = len(LABELS)
    ours = tokenize_labels(
        tokenizer, [LABELS], chat_template=resolve_chat_template(tokenizer), max_length=256, max_prompt_length=128,
        sources=[[(i - 1) % n for i in range(n)]],
    ).pairs  # fmt: skip
    for mine, theirs in zip(ours, trl_rows, strict=True):
        assert list(mine.prompt_ids) == theirs["prompt_ids"]
        assert list(mine.chosen_ids) == theirs["completion_ids"]
        assert list(mine.rejected_ids) == theirs["KL_completion_ids"]
        assert mine.desirable == theirs["label"]

    # 2. Same numbers for the whole batch and for parts of it (z0 is each batch's own), in both layouts.
    groups = [list(range(n)), [0, 1, 2], [3, 4, 5, 6], [2, 3], [0, 1]]  # with seed 1, [0, 1] has z0 > 0
    kls, margins = [], []
    for group in groups:
        theirs = trl_numbers(trainer, [trl_rows[i] for i in group])
        trl_grads = lora_grads(model)
        kls.append(theirs["kl"])
        margins.append(abs(theirs.get("rewards/margins", 0.0)))
        for layout in (collate, collate_shared):
            mine = our_numbers(model, [ours[i] for i in group], layout, weights)
            keys = [key for key in METRICS if key in theirs]  # TRL leaves out a side the batch lacks
            deltas = {key: abs(mine[key] - theirs[key]) for key in keys}
            assert max(deltas.values()) < TOL, (group, layout.__name__, deltas, mine, theirs)
            for name, grad in lora_grads(model).items():
                torch.testing.assert_close(grad, trl_grads[name], atol=TOL, rtol=TOL, msg=name)

    # The comparison means something: the adapter moved the policy, and z0 was above its clamp at least once.
    assert max(margins) > 1e-3, margins
    assert max(kls) > 1e-3, kls


def test_the_loss_by_hand():
    """Eq. (7) worked by hand: z0 = max(0, mean mismatched log-ratio); λ·(1 − σ(±β(r − z0)))."""
    policy = torch.tensor([-10.0, -12.0, -8.0])
    reference = torch.tensor([-11.0, -11.0, -8.0])  # r = 1, −1, 0
    policy_kl = torch.tensor([-20.0, -18.0, -15.0])
    reference_kl = torch.tensor([-21.0, -20.0, -15.0])  # mismatched log-ratios 1, 2, 0: z0 = 1
    desirable = torch.tensor([True, False, True])
    out = kto_loss(
        policy,
        reference,
        policy_kl,
        reference_kl,
        desirable,
        beta=0.5,
        desirable_weight=2.0,
        undesirable_weight=1.0,
    )
    sigmoid = torch.sigmoid
    expected = [
        2 * (1 - sigmoid(torch.tensor(0.0))),
        1 - sigmoid(torch.tensor(0.5 * 2)),
        2 * (1 - sigmoid(torch.tensor(-0.5))),
    ]
    torch.testing.assert_close(out.losses, torch.stack(expected))
    torch.testing.assert_close(out.rewards, torch.tensor([0.5, -0.5, 0.0]))
    torch.testing.assert_close(out.kl, torch.ones(3))
    # A negative estimate is clamped: the reference point never drops below 0.
    clamped = kto_loss(policy, reference, reference_kl, policy_kl, desirable, beta=0.5)
    torch.testing.assert_close(clamped.kl, torch.zeros(3))
    metrics = kto_metrics(out, policy_chosen_logps=policy)
    # Desirable: β(r − z0) = 0 (not above), −0.5 (below); undesirable: −1 (below, right side): 1 of 3.
    assert metrics["rewards/accuracies"] == pytest.approx(1 / 3)
    assert metrics["rewards/chosen"] == pytest.approx(0.25) and metrics["rewards/rejected"] == pytest.approx(
        -0.5
    )
    assert metrics["logps/chosen"] == pytest.approx(-9.0) and metrics["logps/rejected"] == pytest.approx(
        -12.0
    )


def test_balanced_weights_follow_eq_8():
    assert balanced_weights(5, 5) == (1.0, 1.0)
    assert balanced_weights(6, 5) == (1.0, 1.0)  # ratio 1.2: already in [1, 4/3]
    assert balanced_weights(2, 6) == (3.0, 1.0)  # "both bad" picks: λ_D·2 / 6 = 1
    d, u = balanced_weights(8, 3)  # many rewrites: 8 / (λ_U·3) = 4/3
    assert d == 1.0 and 8 / (u * 3) == pytest.approx(4 / 3)
    assert balanced_weights(0, 4) == (1.0, 1.0)
