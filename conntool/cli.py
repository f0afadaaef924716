"""conntool command line. Heavy imports live inside the commands so ``--help`` is instant."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from functools import partial
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
        except click.UsageError as err:  # a subcommand's bad option: one line too, not click's usage block
            click.echo(f"conntool: error: {err.format_message()}", err=True)
            sys.exit(2)


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"conntool: {record.levelname.lower()}: {record.getMessage()}"


def _log_to_terminal() -> None:
    """conntool's warnings (several T1w, header TR, atlas labels) as one line each on stderr."""
    logger = logging.getLogger("conntool")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_OneLine())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    logger.handlers[0].setStream(sys.stderr)  # the stream of this invocation (tests swap it)


class _SeveralValues(click.Option):
    """An option that takes several values after one flag, BIDS-Apps style
    (``--participant-label 01 02 03``), and may also be repeated."""

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            take_one = option.process

            def process(value, state, take_one=take_one):
                take_one(value, state)
                while state.rargs and not state.rargs[0].startswith("-") and state.rargs[0] not in ANALYSIS_LEVELS:
                    take_one(state.rargs.pop(0), state)

            option.process = process


ANALYSIS_LEVELS = ("participant", "group")


@click.group(cls=_Group)
@click.version_option(package_name="conntool")
def main() -> None:
    """Raw BIDS BOLD and diffusion MRI to functional and structural connectomes."""
    _log_to_terminal()


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


def _usable_folder(path: Path, option: str) -> Path:
    """``path`` as an absolute folder that exists or can be made (no file at it or above it)."""
    path = Path(path).absolute()
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConntoolInputError(f"{option} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise ConntoolInputError(f"{option} {path}: {parent} is not writable")
            return path
    return path


def _common(func):
    options = [
        click.argument("bids_dir", type=click.Path(path_type=Path)),
        click.argument("output_dir", type=click.Path(path_type=Path)),
        click.argument("analysis_level", required=False, default="participant", type=click.Choice(ANALYSIS_LEVELS)),
        click.option("--participant-label", "participant_labels", cls=_SeveralValues, multiple=True,
                     help="Subject labels (with or without sub-), several after one flag; default every "
                          "participant in the dataset."),
        click.option("--atlas", "atlas_specs", multiple=True, required=True,
                     help="Atlas name (built-in or in --atlas-dir) or label NIfTI path; repeatable."),
        click.option("--atlas-dir", type=click.Path(path_type=Path), default=None,
                     help="Folder of atlas-<Name>_..._dseg.nii.gz images with label tables."),
        click.option("--work-dir", type=click.Path(path_type=Path), default=None,
                     help="nipype work folder (resumable cache, crash files, nipype's log); "
                          "default OUTPUT_DIR/../work."),
        click.option("--nprocs", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Processes for MultiProc."),
        click.option("--chunk-mb", type=click.FloatRange(min=1), default=None,
                     help="MB of a BOLD series a step holds at once (default 256); bounds the memory of "
                          "the fMRI steps whatever the run length; results do not depend on it."),
        click.option("--plugin", default="MultiProc", show_default=True,
                     help="nipype plugin: Linear, MultiProc, SLURM, SGE, PBS, ..."),
        click.option("--plugin-args", default=None, help="JSON object passed to the nipype plugin."),
        click.option("--overwrite", is_flag=True,
                     help="Replace results made with another configuration (a rerun with the same one resumes)."),
        click.option("--verbose", is_flag=True, help="Show nipype's log on the terminal instead of the work folder."),
        click.option("--no-report", is_flag=True,
                     help="Draw no QC figures and write no HTML report (OUTPUT_DIR/sub-<label>.html; group.html "
                          "at the group level)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _inputs(command: str, options: dict, cfg) -> tuple[list, object, object]:
    """(participants, expected_outputs, init_wf) of ``command``; inputs validated."""
    labels = list(options["participant_labels"])
    options = {**options, "bids_dir": Path(options["bids_dir"]).absolute()}  # nodes run in the work folder
    if command == "connectome":
        from conntool.config import check_against_tr
        from conntool.fmriprep import find_preprocessed
        from conntool.workflows.fmriprep import expected_preproc_outputs, init_preproc_connectome_wf

        participants = find_preprocessed(options["bids_dir"], labels, options["space"])
        for run in (run for p in participants for run in p.bold):
            check_against_tr(cfg, run.tr, str(run.path))
        save = {"save_bold": options["save_bold"]}
        return participants, partial(expected_preproc_outputs, **save), partial(init_preproc_connectome_wf, **save)
    from conntool.bids import find_participants

    participants = find_participants(options["bids_dir"], labels, command)
    if command == "fmri":
        from conntool.config import check_against_tr
        from conntool.workflows.fmri import expected_outputs, init_fmri_wf

        for run in (run for p in participants for run in p.bold):
            check_against_tr(cfg, run.tr, str(run.path))
        save = {"save_bold": options["save_bold"]}
        return participants, partial(expected_outputs, **save), partial(init_fmri_wf, **save)
    from conntool.workflows.dmri import expected_outputs, init_dmri_wf

    return participants, expected_outputs, init_dmri_wf


def _data_spaces(command: str, cfg, participants: list) -> list[str]:
    """The template space(s) the command's data are in: the fMRIPrep runs' spaces, or the one the
    preset's ``normalization.template`` gives (nilearn's 2009a when ``$TEMPLATEFLOW_HOME`` does not
    hold it, which a warning says)."""
    from conntool.templates import NILEARN_SPACE, find_template, output_template

    if command == "connectome":
        return sorted({run.space for p in participants for run in p.bold})
    section = "dmri" if command == "dmri" else "fmri"
    requested = getattr(cfg, section).normalization.template
    if find_template(requested) is None:
        logging.getLogger("conntool").warning(
            f"{section}.normalization.template {requested}: not in $TEMPLATEFLOW_HOME "
            f"({os.environ.get('TEMPLATEFLOW_HOME') or 'unset'}); outputs are in nilearn's {NILEARN_SPACE}, named so")
    return [output_template(requested).name]


def _run_path(command: str, options: dict, seeds: list[str]):
    """Validate, refuse to overwrite, build, run and record provenance for the participants.

    Every participant is its own sub-workflow, so the plugin runs them side by side and one
    participant's failure stops only what depends on it. Returns (participants, output_dir,
    failures) for the command's closing summary. At the ``group`` analysis level nothing is
    processed: the cohort's matrices are exported instead (:func:`_group_level`).
    """
    from nipype.pipeline import engine as pe

    from conntool import __version__
    from conntool.atlases import alignment_map, check_overlap, report_alignment, resolve_atlas
    from conntool.config import load_pipeline
    from conntool.execution import LOG_NAME, plugin_names, run_workflow
    from conntool.outputs import (check_not_overwriting, dataset_description, recorded_config_hash,
                                  remove_stale_parts)

    o = options
    section = "dmri" if command == "dmri" else "fmri"
    cfg = load_pipeline(o["pipeline"])
    if getattr(cfg, section) is None:
        raise ConntoolInputError(f"--pipeline {o['pipeline']}: has no '{section}' section")
    if o["plugin"] not in plugin_names():
        raise ConntoolInputError(f"--plugin {o['plugin']}: unknown nipype plugin (known: {', '.join(plugin_names())})")
    plugin_args = _parse_plugin_args(o["plugin_args"])
    output_dir = _usable_folder(o["output_dir"], "OUTPUT_DIR")
    work_dir = _usable_folder(o["work_dir"] or output_dir.parent / "work", "--work-dir")
    atlas_dir = o["atlas_dir"]
    if atlas_dir is not None and not Path(atlas_dir).is_dir():
        raise ConntoolInputError(f"--atlas-dir {atlas_dir}: not a directory")
    atlas_dir = Path(atlas_dir).absolute() if atlas_dir is not None else None  # nodes run in other folders
    repeated = sorted({s for s in o["atlas_specs"] if o["atlas_specs"].count(s) > 1})
    if repeated:
        raise ConntoolInputError(f"--atlas {repeated[0]}: given more than once")
    participants, expected_outputs, init_wf = _inputs(command, o, cfg)
    specs = [str(Path(s).absolute()) if s.endswith((".nii", ".nii.gz")) else s for s in o["atlas_specs"]]
    atlases = [(spec, resolve_atlas(spec, atlas_dir)) for spec in specs]
    names = [a.name for _, a in atlases]
    if len(set(names)) < len(names):
        raise ConntoolInputError(f"--atlas: two atlases are both named {max(names, key=names.count)}")
    if o["analysis_level"] == "group":
        _group_level(command, cfg, participants, names, output_dir, Path(o["bids_dir"]), o["overwrite"])
        if not o["no_report"]:
            from conntool.reports.group import write_group_report

            click.echo(f"report: {write_group_report(output_dir)}")
        return participants, output_dir, []
    for _, atlas in atlases:
        check_overlap(atlas)
    expected = [path for p in participants for path in expected_outputs(p, [a for _, a in atlases], cfg, output_dir)]
    check_not_overwriting(expected, o["overwrite"], cfg.digest(), recorded_config_hash(output_dir, command))
    spaces = _data_spaces(command, cfg, participants)
    atlases = [(spec, dataclasses.replace(atlas, atlas_map=alignment_map(atlas, spaces[0]) if len(spaces) == 1 else ""))
               for spec, atlas in atlases]
    for _, atlas in atlases:
        for space in spaces:
            report_alignment(atlas, space)

    wf = pe.Workflow(name=f"conntool_{command}")
    wf.add_nodes([init_wf(p, atlases, str(atlas_dir or ""), cfg, output_dir, report=not o["no_report"])
                  for p in participants])
    if o["plugin"] == "MultiProc":
        plugin_args.setdefault("n_procs", o["nprocs"])
    for participant in participants:
        remove_stale_parts(output_dir / f"sub-{participant.label}")
    dataset_description(output_dir, __version__, command, cfg.to_dict(), cfg.digest(),
                        " ".join(["conntool", *sys.argv[1:]]), {name: cfg.seed for name in seeds}, spaces)
    try:
        failures = run_workflow(wf, work_dir, o["plugin"], plugin_args, verbose=o["verbose"], chunk_mb=o["chunk_mb"])
    except RuntimeError as err:  # the plugin itself failed (a job that died unreported, a scheduler error)
        click.echo(f"conntool: processing failed: {err} (nipype's log: {work_dir / LOG_NAME})", err=True)
        sys.exit(1)
    for failure in failures:
        click.echo(failure.line(), err=True)
    return participants, output_dir, failures


def _group_level(command: str, cfg, participants: list, atlas_names: list[str], output_dir: Path, source: Path,
                 overwrite: bool) -> None:
    """BIDS-Apps ``group`` level: every atlas × measure of the participants' results stacked in
    ``OUTPUT_DIR/group/atlas-<A>_meas-<M>_connectomes.npz`` with its manifest (see ``export``)."""
    from conntool.export import export
    from conntool.steps.connectivity import BIDS_MEASURE

    if command == "dmri":
        from conntool.interfaces.dmri import SC_MEASURES as measures
    else:
        measures = [BIDS_MEASURE[m] for m in cfg.fmri.connectivity.measures]
    table = source / "participants.tsv"
    for atlas in atlas_names:
        for measure in measures:
            dest = output_dir / "group" / f"atlas-{atlas}_meas-{measure}_connectomes.npz"
            result = export(output_dir, dest, "npz", atlas, measure, overwrite=overwrite,
                            participants_tsv=table if table.is_file() else None,
                            provenance={"Command": " ".join(["conntool", *sys.argv[1:]])})
            click.echo(f"{dest}: {result.included} runs ({result.excluded} excluded; see its manifest)")


def _run_summary(participants: list, output_dir: Path, qc_path) -> None:
    """One line per run (volumes kept, excluded and why, or failed) and the totals."""
    kept = total = 0
    for participant in participants:
        for run in participant.bold:
            total += 1
            path = qc_path(output_dir, run)
            if not path.is_file():
                status = "failed (see the lines above)"
            else:
                qc = json.loads(path.read_text())
                kept += not qc["Excluded"]
                status = f"excluded: {qc['Reason']}" if qc["Excluded"] else f"{qc['VolumesKept']} volumes kept"
            click.echo(f"{run.path.name}: {status}")
    click.echo(f"{kept} of {total} runs kept ({len(participants)} participants); results in {output_dir}")


@main.command()
@_common
@click.option("--pipeline", default="fmri-default", show_default=True, help="Preset name or YAML path.")
@click.option("--save-bold", is_flag=True,
              help="Also write the denoised template-space BOLD (desc-denoised_bold.nii.gz, float32) for voxel-wise "
                   "encoding models.")
def fmri(**options):
    """Functional connectomes from raw BIDS BOLD (BIDS-Apps arguments: BIDS_DIR OUTPUT_DIR [participant])."""
    from conntool.workflows.fmri import qc_path

    participants, output_dir, failures = _run_path("fmri", options, ["registration"])
    if options["analysis_level"] == "participant":
        _run_summary(participants, output_dir, qc_path)
    if failures:
        sys.exit(1)


@main.command()
@_common
@click.option("--pipeline", default="dmri-csd-prob", show_default=True, help="Preset name or YAML path.")
def dmri(**options):
    """Structural connectomes from raw BIDS DWI (the series of each session are combined)."""
    participants, output_dir, failures = _run_path("dmri", options, ["registration", "tracking"])
    for participant in participants if options["analysis_level"] == "participant" else []:
        found = sorted((output_dir / f"sub-{participant.label}").glob("**/dwi/*_tractography.json"))
        for sidecar in found:
            click.echo(f"{sidecar.name}: {json.loads(sidecar.read_text())['StreamlineCount']} streamlines")
        if not found:
            click.echo(f"sub-{participant.label}: failed (see the lines above)")
    click.echo(f"results in {output_dir}")
    if failures:
        sys.exit(1)


@main.command()
@_common
@click.option("--pipeline", default="fmri-36p-scrub", show_default=True, help="Preset name or YAML path.")
@click.option("--space", default=None,
              help="Standard space of the fMRIPrep outputs to use (default: MNI152NLin2009cAsym, else the first "
                   "MNI space found).")
@click.option("--save-bold", is_flag=True,
              help="Also write the denoised BOLD (desc-denoised_bold.nii.gz, float32) for voxel-wise encoding models.")
def connectome(**options):
    """Functional connectomes from fMRIPrep derivatives (BIDS_DIR is the fMRIPrep output folder):
    the same denoising, parcellation and connectivity as ``conntool fmri``."""
    from conntool.workflows.fmriprep import preproc_run_paths

    participants, output_dir, failures = _run_path("connectome", options, [])
    if options["analysis_level"] == "participant":
        _run_summary(participants, output_dir, lambda out, run: preproc_run_paths(out, run)["qc"])
    if failures:
        sys.exit(1)


@main.command()
@click.argument("output_dir", type=click.Path(path_type=Path))
def report(output_dir):
    """Rebuild every participant's page (OUTPUT_DIR/sub-<label>.html) and the group page
    (OUTPUT_DIR/group.html: QC table, mean FD, mean FC, QC-FC) from the results in OUTPUT_DIR."""
    from conntool.reports.group import write_group_report

    if not (Path(output_dir) / "dataset_description.json").is_file():
        raise ConntoolInputError(f"{output_dir}: not a conntool output folder (no dataset_description.json)")
    click.echo(f"report: {write_group_report(output_dir)}")


@main.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--subjects", type=click.IntRange(1, 100), default=1, show_default=True, help="Number of participants.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (recorded with the truth).")
@click.option("--modalities", default="fmri", show_default=True, help="Comma-separated: fmri, dmri.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset.")
@click.option("--fmriprep", is_flag=True,
              help="Write fMRIPrep-shaped derivatives (preprocessed BOLD in template space, brain mask, confounds) "
                   "instead of raw BIDS; truth and atlas in OUT_DIR/sourcedata/simulation.")
@click.option("--profile", type=click.Choice(["small", "hcp", "abcd"]), default="small", show_default=True,
              help="Sizes. small: 2 mm T1w, 3 mm BOLD x 243 volumes (TR 2 s), 3 mm DWI x 35 (b=1000). "
                   "hcp: 1 mm T1w, 2 mm BOLD 96x114x96 x 600 (TR 0.8 s), 2 mm DWI x 96 (b=0/1000/2000/3000). "
                   "abcd: 1 mm T1w, 2.4 mm BOLD 90x90x60 x 383 (TR 0.8 s), 1.7 mm DWI x 103 "
                   "(b=0/500/1000/2000/3000). hcp and abcd take minutes and a few GB per participant.")
@click.option("--b0-field-hz", type=click.FloatRange(0, 200), default=0, show_default=True,
              help="Peak off-resonance (Hz) of a susceptibility field that distorts the BOLD along its phase-encoding "
                   "axis (j, TotalReadoutTime 0.05 s), with a phase-difference fieldmap; the true field is written "
                   "with the truth. 0: no distortion, no fieldmap.")
@click.option("--bold-fieldmap", type=click.Choice(["phasediff", "epi"]), default="phasediff", show_default=True,
              help="With --b0-field-hz, the BOLD run's field information: a GRE phase-difference fieldmap, or two "
                   "spin-echo EPI references of opposite phase encoding (fmap/*_dir-AP_epi, *_dir-PA_epi).")
def simulate(out_dir, subjects, seed, modalities, overwrite, fmriprep, profile, b0_field_hz, bold_fieldmap):
    """Write a synthetic BIDS dataset with known connectivity (truth in derivatives/simulation)."""
    from conntool.simulate import PROFILES, simulate_dataset

    wanted = {m.strip() for m in modalities.split(",") if m.strip()}
    if not wanted or wanted - {"fmri", "dmri"}:
        raise ConntoolInputError(f"--modalities {modalities}: choose from fmri, dmri")
    if fmriprep and wanted != {"fmri"}:
        raise ConntoolInputError(f"--fmriprep: simulates fMRIPrep's fMRI outputs only, not --modalities {modalities}")
    if fmriprep and b0_field_hz:
        raise ConntoolInputError("--fmriprep: fMRIPrep's outputs are already corrected; --b0-field-hz does not apply")
    if fmriprep and profile != "small":
        raise ConntoolInputError(f"--fmriprep: simulates the small profile only, not --profile {profile}")
    if (out_dir / "dataset_description.json").exists() and not overwrite:
        raise ConntoolInputError(f"{out_dir}: dataset exists; pass --overwrite to replace")
    if fmriprep:
        from conntool.simulate_fmriprep import TRUTH_SUBDIR, simulate_fmriprep_dataset

        simulate_fmriprep_dataset(out_dir, subjects, seed)
        click.echo(f"simulated fMRIPrep derivatives of {subjects} subject(s) in {out_dir}; "
                   f"ground truth and atlas in {out_dir / TRUTH_SUBDIR}")
        return
    settings = dataclasses.replace(PROFILES[profile], b0_peak_hz=b0_field_hz, bold_fieldmap=bold_fieldmap)
    simulate_dataset(out_dir, subjects, seed, modalities=tuple(sorted(wanted)), settings=settings)
    click.echo(f"simulated {subjects} subject(s) ({profile} profile) in {out_dir}; "
               f"ground truth in {out_dir / 'derivatives/simulation'}")


@main.group()
def atlas() -> None:
    """Atlases available to --atlas."""


@atlas.command("list")
@click.option("--atlas-dir", type=click.Path(path_type=Path), default=None, help="Folder of atlas images to list too.")
def atlas_list(atlas_dir):
    """Names of the built-in atlases and those in --atlas-dir."""
    from conntool.atlases import list_atlases

    for name, where in list_atlases(atlas_dir).items():
        click.echo(f"{name}\t{where}")


@atlas.command("show")
@click.argument("name")
@click.option("--atlas-dir", type=click.Path(path_type=Path), default=None, help="Folder to look for NAME in.")
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
    """Names and descriptions of the shipped presets."""
    from conntool.config import load_pipeline, preset_names

    for name in preset_names():
        click.echo(f"{name}\t{load_pipeline(name).description}")


@pipelines.command("show")
@click.argument("name")
def pipelines_show(name):
    """The YAML text of a preset (redirect it to a file to make your own)."""
    from conntool.config import preset_text

    click.echo(preset_text(name)[1], nl=False)


@main.command()
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True,
              type=click.Choice(["braingb", "braingb-npy", "metamatching", "pyg", "bct", "npz"]),
              help="Layout of DEST (.mat, .npy, .npz, .npz, .mat, .npz).")
@click.option("--atlas", required=True, help="Atlas name, as in the seg- entity of the matrices.")
@click.option("--measure", required=True,
              help="PearsonCorrelation, PartialCorrelation, Covariance, Precision, StreamlineCount, "
                   "StreamlineCountVolumeNormalized, MeanLength, MeanFA, or tangent (from the mean time series).")
@click.option("--label-column", "label_columns", multiple=True,
              help="participants.tsv column to export as label or covariate; repeatable.")
@click.option("--participants-tsv", type=click.Path(path_type=Path), default=None,
              help="The raw dataset's participants.tsv; default OUTPUT_DIR/participants.tsv if there is one.")
@click.option("--max-missing-nodes", type=click.IntRange(min=0), default=None,
              help="With --missing mean or keep: exclude runs with more nodes than this without data.")
@click.option("--missing", type=click.Choice(["exclude", "mean", "keep"]), default="exclude", show_default=True,
              help="Runs with nodes without data: drop them, fill with the group mean, or keep n/a (npz only).")
@click.option("--sparsify", default=None, help="pyg graphs: topk:K (per node) or threshold:T (|weight|).")
@click.option("--overwrite", is_flag=True, help="Replace DEST and its manifest.")
def export(output_dir, dest, fmt, atlas, measure, label_columns, participants_tsv, max_missing_nodes, missing,
           sparsify, overwrite):
    """Stack one atlas x measure of all participants/runs into a file ML code loads, with a manifest."""
    from conntool import __version__
    from conntool.export import export as export_cohort

    result = export_cohort(output_dir, dest, fmt, atlas, measure, label_columns=label_columns,
                           participants_tsv=participants_tsv, max_missing_nodes=max_missing_nodes, missing=missing,
                           sparsify=sparsify, overwrite=overwrite,
                           provenance={"ConntoolVersion": __version__,
                                       "Command": " ".join(["conntool", *sys.argv[1:]])})
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"{result.included} run(s) exported, {result.excluded} excluded (reasons in the manifest): "
               + ", ".join(str(p) for p in result.files))


if __name__ == "__main__":
    main()
