// The loader's digest code (loader/src/verity.rs) built for this machine: the fs-verity digest of
// a file with each engine, its speed in bytes per second (best of N runs), the digest, and the
// digest of the file fed in pieces as the loader reads it. tools/bench times it; tests/test_verity.py
// checks each engine's digests against fsverity-utils.
#[allow(dead_code)]
mod sha256;
#[allow(dead_code)]
mod verity;
use verity::Engine;

fn supported(e: Engine) -> bool {
    match e {
        Engine::Scalar | Engine::Sse2 => true,
        Engine::Avx2 => std::is_x86_feature_detected!("avx2"),
        Engine::ShaNi => std::is_x86_feature_detected!("sha") && std::is_x86_feature_detected!("sse4.1"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).unwrap();
    let runs: usize = args[2].parse().unwrap();
    for (name, e) in [("scalar", Engine::Scalar), ("sse2", Engine::Sse2), ("avx2", Engine::Avx2), ("sha_ni", Engine::ShaNi)] {
        if !supported(e) {
            println!("{name} unsupported");
            continue;
        }
        let mut best = f64::MAX;
        let mut digest = [0u8; 32];
        for _ in 0..runs {
            let start = std::time::Instant::now();
            digest = verity::digest(&data, e);
            best = best.min(start.elapsed().as_secs_f64());
        }
        let hex: String = digest.iter().map(|b| format!("{:02x}", b)).collect();
        // The same file fed as the loader reads it: pieces of whole blocks (1, 3, 17, 64, 1, ...
        // blocks), the last one whatever is left.
        let mut streamed = verity::Digest::new(e);
        let mut at = 0;
        for blocks in [1, 3, 17, 64].iter().cycle() {
            let end = (at + blocks * verity::BLOCK).min(data.len());
            streamed.update(&data[at..end]);
            at = end;
            if at == data.len() {
                break;
            }
        }
        let streamed: String = streamed.finish().iter().map(|b| format!("{:02x}", b)).collect();
        println!("{name} {} {hex} {streamed}", data.len() as f64 / best);
    }
}
