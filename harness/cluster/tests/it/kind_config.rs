//! The generated kind config, against golden files per scenario shape
//! (`tests/data/kind/golden/`; `ZDT_UPDATE_GOLDEN=1` rewrites them), and
//! parsed back to check it is the kind.x-k8s.io/v1alpha4 document kind reads.

use std::path::PathBuf;

use zdt_cluster::kind::{cluster_name, node_image, render_config, KindSpec, CONFIG_HASH_LABEL};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kind/golden")
}

/// The shapes the scenarios use: the seed experiment (3 workers), the
/// version comparison (1.27 vs 1.31), and the smallest useful cluster.
const SHAPES: &[(usize, &str)] = &[(3, "1.31"), (3, "1.27"), (2, "1.31"), (1, "1.35")];

#[test]
fn generated_configs_match_golden_files() {
    let update = std::env::var_os("ZDT_UPDATE_GOLDEN").is_some();
    for (workers, version) in SHAPES {
        let spec = KindSpec::new(*workers, *version);
        let text = render_config(&spec).unwrap();
        let path = golden_dir().join(format!("{workers}-workers-{version}.yaml"));
        if update {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (ZDT_UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(
            text,
            want,
            "{} differs from the generated config",
            path.display()
        );
    }
}

#[test]
fn generated_configs_are_v1alpha4_clusters_of_the_right_shape() {
    for (workers, version) in SHAPES {
        let spec = KindSpec::new(*workers, *version);
        let doc: serde_json::Value =
            serde_saphyr::from_str(&render_config(&spec).unwrap()).unwrap();
        assert_eq!(doc["kind"], "Cluster");
        assert_eq!(doc["apiVersion"], "kind.x-k8s.io/v1alpha4");
        let nodes = doc["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), workers + 1);
        assert_eq!(nodes[0]["role"], "control-plane");
        let hash = cluster_name(&spec)
            .unwrap()
            .trim_start_matches("zdt-")
            .to_owned();
        for (i, node) in nodes.iter().enumerate() {
            if i > 0 {
                assert_eq!(node["role"], "worker");
            }
            assert_eq!(node["image"], node_image(version).unwrap());
            assert_eq!(node["labels"][CONFIG_HASH_LABEL], hash.as_str());
            // Only the fields v1alpha4 defines for a node are used.
            let keys: Vec<_> = node.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 3, "{keys:?}");
        }
    }
}

fn repo_cluster_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clusters/kind-3-workers.yaml")
}

#[test]
fn the_repos_cluster_file_gets_the_pinned_image_and_the_label() {
    let update = std::env::var_os("ZDT_UPDATE_GOLDEN").is_some();
    for version in ["1.27", "1.31"] {
        let spec = KindSpec {
            workers: 3,
            kubernetes: version.into(),
            config_file: Some(repo_cluster_config()),
        };
        let text = render_config(&spec).unwrap();
        let golden = golden_dir().join(format!("clusters-kind-3-workers-{version}.yaml"));
        if update {
            std::fs::write(&golden, &text).unwrap();
        } else {
            assert_eq!(
                text,
                std::fs::read_to_string(&golden).unwrap(),
                "{}",
                golden.display()
            );
        }
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(doc["apiVersion"], "kind.x-k8s.io/v1alpha4");
        let nodes = doc["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 4);
        let hash = cluster_name(&spec)
            .unwrap()
            .trim_start_matches("zdt-")
            .to_owned();
        for node in nodes {
            assert_eq!(node["image"], node_image(version).unwrap());
            assert_eq!(node["labels"][CONFIG_HASH_LABEL], hash.as_str());
        }
    }
    let name = |v: &str| {
        cluster_name(&KindSpec {
            workers: 3,
            kubernetes: v.into(),
            config_file: Some(repo_cluster_config()),
        })
        .unwrap()
    };
    assert_ne!(
        name("1.27"),
        name("1.31"),
        "the version is part of the shape"
    );
}

#[test]
fn a_user_config_keeps_its_own_images_and_labels_and_must_agree_on_workers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.yaml");
    std::fs::write(
        &file,
        "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n- role: worker\n  image: my/node:v1\n  labels: {tier: web}\n",
    )
    .unwrap();
    let mut spec = KindSpec {
        workers: 1,
        kubernetes: "1.31".into(),
        config_file: Some(file.clone()),
    };
    let doc: serde_json::Value = serde_saphyr::from_str(&render_config(&spec).unwrap()).unwrap();
    assert_eq!(doc["nodes"][0]["image"], node_image("1.31").unwrap());
    assert_eq!(doc["nodes"][1]["image"], "my/node:v1");
    assert_eq!(doc["nodes"][1]["labels"]["tier"], "web");
    assert!(doc["nodes"][1]["labels"][CONFIG_HASH_LABEL].is_string());

    spec.workers = 2;
    let err = render_config(&spec).unwrap_err().to_string();
    assert!(
        err.contains("mine.yaml") && err.contains("cluster.workers is 2"),
        "{err}"
    );

    std::fs::write(&file, "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\n").unwrap();
    let err = render_config(&spec).unwrap_err().to_string();
    assert!(err.contains("v1alpha4"), "{err}");

    std::fs::remove_file(&file).unwrap();
    let err = spec.config_text().unwrap_err().to_string();
    assert!(err.contains("mine.yaml"), "{err}");
}
