"""conntool command line. Heavy imports live inside the commands so ``--help`` is instant."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from conntool.errors import ConntoolInputError


class _Group(click.Group):
    """Turn user errors into one line and exit code 2; processing failures into exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConntoolInputError as err:
            click.echo(f"conntool: error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="conntool")
def main() -> None:
    """Raw BIDS BOLD and diffusion MRI to functional and structural connectomes."""


def _parse_plugin_args(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConntoolInputError(f"--plugin-args: not valid JSON ({err.msg})") from err
    if not isinstance(value, dict):
        raise ConntoolInputError("--plugin-args: expected a JSON object")
    return value


def _common(func):
    options = [
        click.argument("bids_dir", type=click.Path(path_type=Path)),
        click.argument("output_dir", type=click.Path(path_type=Path)),
        click.option("--participant-label", default=None, help="Subject label (without sub-); default the first."),
        click.option("--atlas", "atlas_specs", multiple=True, required=True,
                     help="Atlas name (built-in or in --atlas-dir) or label NIfTI path; repeatable."),
        click.option("--atlas-dir", type=click.Path(path_type=Path), default=None,
                     help="Folder of atlas-<Name>_..._dseg.nii.gz images with label tables."),
        click.option("--work-dir", type=click.Path(path_type=Path), default=None,
                     help="nipype work folder (resumable cache); default OUTPUT_DIR/../work."),
        click.option("--nprocs", type=int, default=2, show_default=True, help="Processes for MultiProc."),
        click.option("--plugin", default="MultiProc", show_default=True,
                     help="nipype plugin: Linear, MultiProc, SLURM, SGE, PBS, ..."),
        click.option("--plugin-args", default=None, help="JSON object passed to the nipype plugin."),
        click.option("--overwrite", is_flag=True, help="Replace existing results."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_path(modality: str, options: dict, seeds: list[str]):
    """Validate, refuse to overwrite, build, run and record provenance for one participant.

    Returns (participant, output_dir) for the command's closing summary.
    """
    from conntool.atlases import check_overlap, resolve_atlas
    from conntool.bids import find_participant
    from conntool.config import load_pipeline
    from conntool.outputs import check_not_overwriting, dataset_description

    if modality == "fmri":
        from conntool.workflows.fmri import expected_outputs
        from conntool.workflows.fmri import init_fmri_wf as init_wf
    else:
        from conntool.workflows.dmri import expected_outputs
        from conntool.workflows.dmri import init_dmri_wf as init_wf
    from conntool import __version__
    from conntool.execution import run_workflow

    o = options
    cfg = load_pipeline(o["pipeline"])
    if getattr(cfg, modality) is None:
        raise ConntoolInputError(f"--pipeline {o['pipeline']}: has no '{modality}' section")
    atlas_dir = o["atlas_dir"]
    if atlas_dir is not None and not Path(atlas_dir).is_dir():
        raise ConntoolInputError(f"--atlas-dir {atlas_dir}: not a directory")
    atlas_dir = Path(atlas_dir).absolute() if atlas_dir is not None else None  # nodes run in other folders
    plugin_args = _parse_plugin_args(o["plugin_args"])
    participant = find_participant(o["bids_dir"], o["participant_label"], modality)
    specs = [str(Path(s).absolute()) if s.endswith((".nii", ".nii.gz")) else s for s in o["atlas_specs"]]
    atlases = [(spec, resolve_atlas(spec, atlas_dir)) for spec in specs]
    for _, atlas in atlases:
        check_overlap(atlas)
    output_dir: Path = o["output_dir"]
    check_not_overwriting(expected_outputs(participant, [a for _, a in atlases], cfg, output_dir), o["overwrite"])

    wf = init_wf(participant, atlases, str(atlas_dir or ""), cfg, output_dir.absolute())
    if o["plugin"] == "MultiProc":
        plugin_args.setdefault("n_procs", o["nprocs"])
    try:
        run_workflow(wf, o["work_dir"] or output_dir.absolute().parent / "work", o["plugin"], plugin_args)
    except RuntimeError as err:
        click.echo(f"conntool: processing failed: {err} (crash files in the work folder's crash/)", err=True)
        sys.exit(1)
    dataset_description(output_dir, __version__, cfg.to_dict(), cfg.digest(),
                        " ".join(["conntool", *sys.argv[1:]]), {name: cfg.seed for name in seeds})
    return participant, output_dir


@main.command()
@_common
@click.option("--pipeline", default="fmri-default", show_default=True, help="Preset name or YAML path.")
def fmri(**options):
    """Functional connectomes from raw BIDS BOLD (BIDS-Apps style arguments)."""
    from conntool.workflows.fmri import run_paths

    participant, output_dir = _run_path("fmri", options, ["registration"])
    for run in participant.bold:
        qc = json.loads(run_paths(output_dir, run)["qc"].read_text())
        status = f"excluded: {qc['Reason']}" if qc["Excluded"] else f"{qc['VolumesKept']} volumes kept"
        click.echo(f"{run.path.name}: {status}")
    click.echo(f"connectomes in {output_dir / ('sub-' + participant.label) / 'func'}")


@main.command()
@_common
@click.option("--pipeline", default="dmri-csd-prob", show_default=True, help="Preset name or YAML path.")
def dmri(**options):
    """Structural connectomes from raw BIDS DWI (all series of the participant are combined)."""
    participant, output_dir = _run_path("dmri", options, ["registration", "tracking"])
    sidecar = next((output_dir / f"sub-{participant.label}" / "dwi").glob("*_tractography.json"))
    click.echo(f"{json.loads(sidecar.read_text())['StreamlineCount']} streamlines; "
               f"connectomes in {sidecar.parent}")


@main.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--subjects", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--modalities", default="fmri", show_default=True, help="Comma-separated: fmri, dmri.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset.")
def simulate(out_dir, subjects, seed, modalities, overwrite):
    """Write a synthetic BIDS dataset with known connectivity (truth in derivatives/simulation)."""
    from conntool.simulate import simulate_dataset

    wanted = {m.strip() for m in modalities.split(",") if m.strip()}
    if not wanted or wanted - {"fmri", "dmri"}:
        raise ConntoolInputError(f"--modalities {modalities}: choose from fmri, dmri")
    if (out_dir / "dataset_description.json").exists() and not overwrite:
        raise ConntoolInputError(f"{out_dir}: dataset exists; pass --overwrite to replace")
    simulate_dataset(out_dir, subjects, seed, modalities=tuple(sorted(wanted)))
    click.echo(f"simulated {subjects} subject(s) in {out_dir}; ground truth in {out_dir / 'derivatives/simulation'}")


@main.group()
def atlas() -> None:
    """Atlases available to --atlas."""


@atlas.command("list")
@click.option("--atlas-dir", type=click.Path(path_type=Path), default=None)
def atlas_list(atlas_dir):
    """Names of the built-in atlases and those in --atlas-dir."""
    from conntool.atlases import list_atlases

    for name, where in list_atlases(atlas_dir).items():
        click.echo(f"{name}\t{where}")


@atlas.command("show")
@click.argument("name")
@click.option("--atlas-dir", type=click.Path(path_type=Path), default=None)
def atlas_show(name, atlas_dir):
    """Nodes of one atlas: index and name, with its space and source."""
    from conntool.atlases import resolve_atlas

    found = resolve_atlas(name, atlas_dir)
    click.echo(f"# {found.name}: {found.n_nodes} nodes, space {found.space}, from {found.source}")
    for index, label in zip(found.label_ids, found.label_names):
        click.echo(f"{index}\t{label}")


@main.group()
def pipelines() -> None:
    """Named pipeline presets (copy one, edit it, pass its path to --pipeline)."""


@pipelines.command("list")
def pipelines_list():
    from conntool.config import load_pipeline, preset_names

    for name in preset_names():
        click.echo(f"{name}\t{load_pipeline(name).description}")


@pipelines.command("show")
@click.argument("name")
def pipelines_show(name):
    from conntool.config import preset_text

    click.echo(preset_text(name)[1], nl=False)


if __name__ == "__main__":
    main()
