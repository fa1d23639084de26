//! Public keys xroot ships, per source. Alpine's are copied from the
//! `alpine-keys` package (`/usr/share/apk/keys/` of the v3.20.3 minirootfs:
//! every key, and per arch the ones that sign that arch's repositories, as
//! `/usr/share/apk/keys/<arch>/` lists them).

/// (file name, PEM) of every shipped Alpine key.
pub const ALPINE: &[(&str, &str)] = &[
    (
        "alpine-devel@lists.alpinelinux.org-4a6a0840.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-4a6a0840.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-5243ef4b.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-5243ef4b.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-524d27bb.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-524d27bb.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-5261cecb.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-5261cecb.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-58199dcc.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-58199dcc.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-58cbb476.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-58cbb476.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-58e4f17d.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-58e4f17d.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-5e69ca50.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-5e69ca50.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-60ac2099.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-60ac2099.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-61666e3f.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-61666e3f.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-616a9724.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-616a9724.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-616abc23.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-616abc23.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-616ac3bc.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-616ac3bc.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-616adfeb.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-616adfeb.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub"),
    ),
    (
        "alpine-devel@lists.alpinelinux.org-616db30d.rsa.pub",
        include_str!("../../../keys/alpine/alpine-devel@lists.alpinelinux.org-616db30d.rsa.pub"),
    ),
];

/// The keys that sign each arch's Alpine repositories.
pub const ALPINE_ARCH: &[(&str, &[&str])] = &[
    (
        "aarch64",
        &[
            "alpine-devel@lists.alpinelinux.org-58199dcc.rsa.pub",
            "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub",
        ],
    ),
    (
        "armhf",
        &[
            "alpine-devel@lists.alpinelinux.org-524d27bb.rsa.pub",
            "alpine-devel@lists.alpinelinux.org-616a9724.rsa.pub",
        ],
    ),
    (
        "armv7",
        &[
            "alpine-devel@lists.alpinelinux.org-524d27bb.rsa.pub",
            "alpine-devel@lists.alpinelinux.org-616adfeb.rsa.pub",
        ],
    ),
    (
        "mips64",
        &["alpine-devel@lists.alpinelinux.org-5e69ca50.rsa.pub"],
    ),
    (
        "ppc64le",
        &[
            "alpine-devel@lists.alpinelinux.org-58cbb476.rsa.pub",
            "alpine-devel@lists.alpinelinux.org-616abc23.rsa.pub",
        ],
    ),
    (
        "riscv64",
        &[
            "alpine-devel@lists.alpinelinux.org-60ac2099.rsa.pub",
            "alpine-devel@lists.alpinelinux.org-616db30d.rsa.pub",
        ],
    ),
    (
        "s390x",
        &[
            "alpine-devel@lists.alpinelinux.org-58e4f17d.rsa.pub",
            "alpine-devel@lists.alpinelinux.org-616ac3bc.rsa.pub",
        ],
    ),
    (
        "x86",
        &[
            "alpine-devel@lists.alpinelinux.org-4a6a0840.rsa.pub",
            "alpine-devel@lists.alpinelinux.org-5243ef4b.rsa.pub",
            "alpine-devel@lists.alpinelinux.org-61666e3f.rsa.pub",
        ],
    ),
    (
        "x86_64",
        &[
            "alpine-devel@lists.alpinelinux.org-4a6a0840.rsa.pub",
            "alpine-devel@lists.alpinelinux.org-5261cecb.rsa.pub",
            "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub",
        ],
    ),
];

/// Adélie Linux's key, `packages@adelielinux.org.pub`, published at
/// <https://distfiles.adelielinux.org/adelie/packages@adelielinux.org.pub>
/// (the URL Adélie's installer, Horizon, downloads it from). Not shipped:
/// no copy from a public source could be obtained while writing this, and
/// a key must never be made up. Until it is added here, `xroot fetch ppc`
/// says where to get it and takes it with `--key FILE`.
pub const ADELIE: &[(&str, &str)] = &[];
