"""Check on a GPU that right-padded chunks score the same with and without the padding mask.

    python benchmarks/gpu_mask_check.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

from lorank.models.random_init import config_for  # noqa: E402
from lorank.train.collator import pad_chunk  # noqa: E402

for shape in ("tiny-llama", "tiny-neox"):
    try:
        cfg = config_for(shape)
    except Exception as e:  # noqa: BLE001
        print(shape, "skipped:", e)
        continue
    cfg.pad_token_id = 1
    torch.manual_seed(0)
    m = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="sdpa").cuda().eval()
    seqs = [torch.randint(3, cfg.vocab_size, (n,)).tolist() for n in (5, 17, 40, 33, 8)]
    ids, mask = pad_chunk(seqs, 1, 16)
    with torch.no_grad():
        a = m(input_ids=ids.cuda(), attention_mask=mask.cuda(), use_cache=False).logits.float()
        b = m(input_ids=ids.cuda(), attention_mask=None, use_cache=False).logits.float()
        c = torch.cat([m(input_ids=torch.tensor([s]).cuda(), use_cache=False).logits.float() for s in seqs])
    print(shape, "max |masked - unmasked|", (a - b).abs().max().item(), "max |unmasked - unpadded|", (b - c).abs().max().item())
