//! POSIX ACLs in the mount: not presented, and never more permissive.
//!
//! A backup keeps a file's access ACL as the `system.posix_acl_access`
//! xattr, and `restore` puts it back. The mount does not present it: asking
//! for an ACL is "not supported", and the kernel checks permissions under
//! `--allow-other` from the modes alone. Instead, a file with an ACL shows
//! modes narrowed so that the mode check never grants anyone more than the
//! ACL did at backup time.
//!
//! Why not let the kernel enforce the ACL itself (`FUSE_POSIX_ACL`): it asks
//! the mount for every inode's ACL the first time it is looked at, and so
//! does `ls -l` for every file it lists. A kernel round trip per file made
//! `ls -lR` of a cold snapshot 4x slower than on the source tree (about 30
//! microseconds a trip on a 2-core VM: each wakes the other CPU); answered
//! "not supported", `ls` stops asking after the first file (measured: 4.0 s
//! down to 0.55 s for 100k files, `benches/mount.sh`).
//!
//! What is given up: `getfacl` and the `+` of `ls -l` in the mount, and
//! access that only an ACL entry granted (a user named in the ACL but not
//! the owner, nor in the owning group, is refused). Borg's mount shows no
//! ACLs either; ours errs on the side of refusing.

/// The xattrs holding POSIX ACLs, which the mount does not present.
pub const ACL_XATTR_PREFIX: &[u8] = b"system.posix_acl_";
/// The access ACL, the one permission checks would use.
pub const ACCESS_ACL_XATTR: &[u8] = b"system.posix_acl_access";

/// Whether `name` is an ACL xattr (access or default).
pub fn is_acl_xattr(name: &[u8]) -> bool {
    name.starts_with(ACL_XATTR_PREFIX)
}

// The Linux xattr form of an ACL (`posix_acl_xattr_header` and
// `posix_acl_xattr_entry` in the kernel's uapi): a little-endian u32
// version, then 8-byte entries of tag (u16), permissions (u16), id (u32).
const XATTR_VERSION: u32 = 2;
const HEADER_LEN: usize = 4;
const ENTRY_LEN: usize = 8;
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;

/// The permission bits (`0o7777`) to present for a node with permission bits
/// `perm` whose access ACL is `acl` (in xattr form).
///
/// The kernel's mode check puts a process in one class: owner, owning
/// group, or other. Under the ACL the same process may instead have matched
/// a named user or a named group entry (limited by the mask). So:
/// - owner: unchanged (the ACL's owner entry is the mode's owner bits);
/// - group: at most the owning group's entry and every named user's (a
///   named user may be in the owning group), all within the mask;
/// - other: at most the other entry and every named user's and named
///   group's, within the mask.
///
/// An ACL that cannot be read leaves only the owner's bits.
pub fn narrowed_perm(perm: u32, acl: &[u8]) -> u32 {
    let Some(entries) = parse(acl) else {
        return perm & !0o077;
    };
    let (mut group_obj, mut other, mut mask) = (None, None, None);
    // What the least privileged named user and named group may do.
    let (mut named_user, mut named_group) = (None::<u32>, None::<u32>);
    for (tag, bits) in entries {
        match tag {
            TAG_USER => named_user = Some(named_user.unwrap_or(0o7) & bits),
            TAG_GROUP => named_group = Some(named_group.unwrap_or(0o7) & bits),
            TAG_GROUP_OBJ => group_obj = Some(bits),
            TAG_MASK => mask = Some(bits),
            TAG_OTHER => other = Some(bits),
            _ => {} // the owner's entry: the mode already says it
        }
    }
    // The mask limits named entries and the owning group, not the owner or
    // other; a minimal ACL has none.
    let mask = mask.unwrap_or(0o7);
    let named_user = named_user.map_or(0o7, |bits| bits & mask);
    let named_group = named_group.map_or(0o7, |bits| bits & mask);
    let group = group_obj.unwrap_or(0) & mask & named_user;
    let other = other.unwrap_or(0) & named_user & named_group;
    let (mode_group, mode_other) = ((perm >> 3) & 0o7, perm & 0o7);
    (perm & !0o077) | ((group & mode_group) << 3) | (other & mode_other)
}

/// The (tag, permission bits) of each entry; `None` for anything that is
/// not a well-formed version-2 ACL.
fn parse(acl: &[u8]) -> Option<Vec<(u16, u32)>> {
    let (header, body) = acl.split_at_checked(HEADER_LEN)?;
    if u32::from_le_bytes(header.try_into().ok()?) != XATTR_VERSION || body.len() % ENTRY_LEN != 0 {
        return None;
    }
    body.chunks_exact(ENTRY_LEN)
        .map(|entry| {
            let tag = u16::from_le_bytes([entry[0], entry[1]]);
            let bits = u16::from_le_bytes([entry[2], entry[3]]) as u32;
            let known = [
                TAG_USER_OBJ,
                TAG_USER,
                TAG_GROUP_OBJ,
                TAG_GROUP,
                TAG_MASK,
                TAG_OTHER,
            ];
            (known.contains(&tag) && bits <= 0o7).then_some((tag, bits))
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// An ACL in xattr form from (tag, permission bits, id) entries.
    pub fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut out = XATTR_VERSION.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    const ANY: u32 = u32::MAX; // ACL_UNDEFINED_ID

    /// `setfacl -m u:1001:r` on a 0640 file: the usual hosting case (let
    /// the web server read) changes nothing the mode check shows.
    #[test]
    fn an_acl_granting_more_leaves_the_modes_alone() {
        let acl = acl_xattr(&[
            (TAG_USER_OBJ, 6, ANY),
            (TAG_USER, 4, 1001),
            (TAG_GROUP_OBJ, 4, ANY),
            (TAG_MASK, 4, ANY),
            (TAG_OTHER, 0, ANY),
        ]);
        assert_eq!(narrowed_perm(0o640, &acl), 0o640);
    }

    /// `setfacl -m u:eve:---` on a 0644 file: the mode says "others read",
    /// the ACL says "not eve". Eve would read it by the mode alone.
    #[test]
    fn an_acl_refusing_a_user_takes_the_read_bits_from_group_and_other() {
        let acl = acl_xattr(&[
            (TAG_USER_OBJ, 6, ANY),
            (TAG_USER, 0, 1002),
            (TAG_GROUP_OBJ, 4, ANY),
            (TAG_MASK, 4, ANY),
            (TAG_OTHER, 4, ANY),
        ]);
        assert_eq!(narrowed_perm(0o644, &acl), 0o600);
    }

    #[test]
    fn named_groups_narrow_other_and_the_mask_narrows_named_entries() {
        let named_group = acl_xattr(&[
            (TAG_USER_OBJ, 7, ANY),
            (TAG_GROUP_OBJ, 5, ANY),
            (TAG_GROUP, 1, 50),
            (TAG_MASK, 5, ANY),
            (TAG_OTHER, 5, ANY),
        ]);
        assert_eq!(narrowed_perm(0o755, &named_group), 0o751);
        // The mask limits the owning group, and a named user, who might
        // be anyone; alone it does not limit other.
        let masked = acl_xattr(&[
            (TAG_USER_OBJ, 7, ANY),
            (TAG_GROUP_OBJ, 7, ANY),
            (TAG_MASK, 1, ANY),
            (TAG_OTHER, 7, ANY),
        ]);
        assert_eq!(narrowed_perm(0o717, &masked), 0o717);
        let masked_named = acl_xattr(&[
            (TAG_USER_OBJ, 7, ANY),
            (TAG_USER, 7, 1003),
            (TAG_GROUP_OBJ, 7, ANY),
            (TAG_MASK, 1, ANY),
            (TAG_OTHER, 7, ANY),
        ]);
        assert_eq!(narrowed_perm(0o717, &masked_named), 0o711);
    }

    #[test]
    fn special_bits_and_the_owner_stay() {
        let acl = acl_xattr(&[
            (TAG_USER_OBJ, 7, ANY),
            (TAG_USER, 0, 7),
            (TAG_GROUP_OBJ, 7, ANY),
            (TAG_MASK, 7, ANY),
            (TAG_OTHER, 7, ANY),
        ]);
        assert_eq!(narrowed_perm(0o3777, &acl), 0o3700);
    }

    #[test]
    fn an_unreadable_acl_leaves_only_the_owner() {
        let good = acl_xattr(&[(TAG_USER_OBJ, 7, ANY), (TAG_OTHER, 5, ANY)]);
        assert_eq!(narrowed_perm(0o755, &good), 0o705);
        let mut wrong_version = good.clone();
        wrong_version[0] = 1;
        let mut unknown_tag = good.clone();
        unknown_tag[4] = 0x40;
        for bad in [
            &b""[..],
            &b"\x02\x00"[..],
            &good[..good.len() - 1],
            &wrong_version,
            &unknown_tag,
        ] {
            assert_eq!(narrowed_perm(0o755, bad), 0o700, "{bad:?}");
        }
    }

    #[test]
    fn acl_names() {
        assert!(is_acl_xattr(ACCESS_ACL_XATTR));
        assert!(is_acl_xattr(b"system.posix_acl_default"));
        assert!(!is_acl_xattr(b"user.comment"));
    }
}
