//! Turns the harness's raw CSV into `RESULTS.md` (medians with spread, ratios,
//! targets) and SVG plots, in the output directory.

use std::path::PathBuf;

use clap::Parser;
use ringvisor_peers::report::{self, plot};

#[derive(Parser, Debug)]
#[command(about = "Summarise benches/run.sh runs into Markdown and SVG plots")]
struct Args {
    /// The raw runs (CSV with a header line).
    #[arg(long)]
    runs: PathBuf,
    /// Where to write the Markdown and the plots.
    #[arg(long)]
    out_dir: PathBuf,
    /// Markdown written above the tables (machine, kernel, date, command).
    #[arg(long)]
    preamble: Option<PathBuf>,
    /// Markdown written below the tables (notes, micro-benchmarks).
    #[arg(long)]
    appendix: Option<PathBuf>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let runs = report::parse_runs(&read(&args.runs)?)?;
    let points = report::summarise(&runs);
    std::fs::create_dir_all(&args.out_dir).map_err(|e| e.to_string())?;
    let plots = plot::write_plots(&points, &args.out_dir)?;
    let mut md = match &args.preamble {
        Some(p) => read(p)?,
        None => String::from("# Benchmark results\n"),
    };
    md.push_str("\n## Results (median ±half-range over the repetitions)\n");
    md.push_str(&report::markdown_tables(&points));
    md.push_str("\n## Ratios (medians of this session)\n");
    md.push_str(&report::markdown_ratios(&points));
    md.push_str("\n## Issue 8 targets\n");
    md.push_str(&report::markdown_targets(&points));
    md.push_str("\n## Plots\n\n");
    for path in &plots {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        md.push_str(&format!("- [{name}]({name})\n"));
    }
    if let Some(p) = &args.appendix {
        md.push('\n');
        md.push_str(&read(p)?);
    }
    let out = args.out_dir.join("RESULTS.md");
    std::fs::write(&out, md).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {} and {} plots", out.display(), plots.len());
    Ok(())
}
