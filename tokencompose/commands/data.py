"""``tokencompose data convert-llava`` and ``tokencompose data convert-benchmark``."""

from __future__ import annotations


def convert_llava_command(json: str, images: str, out: str, shard_mb: float = 256, workers: int = 4,
                          overwrite: bool = False) -> None:
    """LLaVA-format JSON + an image folder -> size-balanced WebDataset shards and a manifest.json.

    Args:
        json: llava_v1_5_mix665k.json, blip_laion_cc_sbu_558k.json or any file of that format.
        images: the folder the JSON's ``image`` paths are relative to (nothing outside it is read).
        out: output folder for the shards and manifest.json (a rerun finishes what a stopped run left).
        shard_mb: target shard size in MiB.
        workers: shards written in parallel.
        overwrite: delete the shards of other inputs in ``out`` and start over.
    """
    from tokencompose.data.convert_llava import convert_llava

    if shard_mb <= 0 or workers < 1:
        raise ValueError(f"--shard_mb={shard_mb} must be > 0 and --workers={workers} >= 1")
    report = convert_llava(json, images, out, int(shard_mb * 2**20), workers, overwrite)
    print(
        f"{report.samples} samples in {report.shards} shards ({report.bytes / 2**20:.1f} MiB); "
        f"{len(report.missing_images)} missing, {len(report.corrupt_images)} corrupt and "
        f"{len(report.refused_images)} refused (paths outside --images) images; ids in {out}/manifest.json"
    )


def convert_benchmark_command(benchmark: str, source: str, out: str, images: str | None = None,
                              annotations: str | None = None) -> None:
    """A benchmark's native release files -> shards with LLaVA-1.5's prompts and the references for scoring.

    Args:
        benchmark: vqav2, vqav2_2016, textvqa, vizwiz, gqa, pope, mme, scienceqa, mmbench or mmvet.
        source: the questions JSON / TSV / JSONL, or the MME folder.
        out: output folder for the shards.
        images: the image folder (not for MMBench's TSV or MME).
        annotations: the VQAv2 annotations JSON (val split).
    """
    from tokencompose.eval.benchmarks import convert_benchmark

    count = convert_benchmark(benchmark, source, out, images, annotations)
    print(f"{count} {benchmark} samples written to {out}")
