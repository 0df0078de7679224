// libnftnl + libmnl: model -> netlink batch, kernel commit, kernel dump.
//
// NOTE include order: the libc network headers must come before
// <linux/netfilter.h>, or the two define the same structs twice.
// NOTE libmnl's mnl_attr_for_each macro does not compile as C++ (void* arithmetic);
// the attribute walks below are written out by hand.

#include "firewall/nft.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/gen.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>
#include <set>
#include <stdexcept>
#include <system_error>

namespace rampart::firewall::nft {

namespace {

// nft's own datatype ids for set keys (nft's src/datatype.h), not kernel constants.
constexpr std::uint32_t nft_type_ipv4_addr = 7;
constexpr std::uint32_t nft_type_ipv6_addr = 8;
// The type of the comment TLV in rule userdata (nft's NFTNL_UDATA_RULE_COMMENT).
constexpr std::uint8_t udata_rule_comment = 0;
constexpr std::uint32_t udata_max = 256;
// Room left before each message: a set element message may grow to 64 KiB.
constexpr std::size_t message_room = 80 * 1024;

template <auto Free> struct deleter {
    template <class T> void operator()(T* p) const { Free(p); }
};
using table_ptr = std::unique_ptr<nftnl_table, deleter<nftnl_table_free>>;
using chain_ptr = std::unique_ptr<nftnl_chain, deleter<nftnl_chain_free>>;
using rule_ptr = std::unique_ptr<nftnl_rule, deleter<nftnl_rule_free>>;
using set_ptr = std::unique_ptr<nftnl_set, deleter<nftnl_set_free>>;
using expr_ptr = std::unique_ptr<nftnl_expr, deleter<nftnl_expr_free>>;
using gen_ptr = std::unique_ptr<nftnl_gen, deleter<nftnl_gen_free>>;
using udata_ptr = std::unique_ptr<nftnl_udata_buf, deleter<nftnl_udata_buf_free>>;
using expr_iter_ptr = std::unique_ptr<nftnl_expr_iter, deleter<nftnl_expr_iter_destroy>>;
using elems_iter_ptr = std::unique_ptr<nftnl_set_elems_iter, deleter<nftnl_set_elems_iter_destroy>>;
using mnl_ptr = std::unique_ptr<mnl_socket, deleter<mnl_socket_close>>;

template <class T> T* checked(T* p) {
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    return p;
}

std::uint32_t key_type(family f) {
    return f == family::ipv4 ? nft_type_ipv4_addr : nft_type_ipv6_addr;
}
std::uint32_t key_len(family f) {
    return f == family::ipv4 ? 4 : 16;
}

std::string hex(const void* data, std::size_t len) {
    static constexpr char digits[] = "0123456789abcdef";
    const auto* p = static_cast<const unsigned char*>(data);
    std::string out;
    for (std::size_t i = 0; i < len; ++i) {
        out += digits[p[i] >> 4];
        out += digits[p[i] & 0xf];
    }
    return out;
}

// ---- batch writer ------------------------------------------------------------

class writer {
public:
    explicit writer(std::uint32_t first_seq) : seq_(first_seq) {
        reserve();
        nftnl_batch_begin(tail(), seq_++);
        advance();
    }

    // Starts a message of `type` for our family; the caller fills its payload.
    nlmsghdr* start(std::uint16_t type, std::uint16_t flags, std::string what) {
        reserve();
        out_.what.emplace(seq_, std::move(what));
        ++out_.messages;
        return nftnl_nlmsg_build_hdr(tail(), type, NFPROTO_INET, flags, seq_++);
    }
    void finish() { advance(); }

    batch done() {
        reserve();
        nftnl_batch_end(tail(), seq_++);
        advance();
        out_.bytes.resize(used_);
        return std::move(out_);
    }

private:
    char* tail() { return out_.bytes.data() + used_; }
    void reserve() {
        if (out_.bytes.size() < used_ + message_room) {
            out_.bytes.resize(std::max(out_.bytes.size() * 2, used_ + message_room));
        }
    }
    void advance() { used_ += reinterpret_cast<nlmsghdr*>(tail())->nlmsg_len; }

    batch out_;
    std::size_t used_ = 0;
    std::uint32_t seq_;
};

table_ptr make_table() {
    table_ptr t(checked(nftnl_table_alloc()));
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table_name);
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
    return t;
}

void put_table(writer& w, std::uint16_t type, std::uint16_t flags, const char* what) {
    const auto t = make_table();
    nlmsghdr* nlh = w.start(type, flags, what);
    nftnl_table_nlmsg_build_payload(nlh, t.get());
    w.finish();
}

// ---- expressions ---------------------------------------------------------------

void add(nftnl_rule* r, expr_ptr e) {
    nftnl_rule_add_expr(r, e.release());
}

expr_ptr expr(const char* name) {
    return expr_ptr(checked(nftnl_expr_alloc(name)));
}

void meta_load(nftnl_rule* r, std::uint32_t key) {
    auto e = expr("meta");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_DREG, NFT_REG_1);
    add(r, std::move(e));
}

void cmp(nftnl_rule* r, std::uint32_t op, const void* data, std::uint32_t len) {
    auto e = expr("cmp");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_OP, op);
    nftnl_expr_set(e.get(), NFTNL_EXPR_CMP_DATA, data, len);
    add(r, std::move(e));
}

void payload(nftnl_rule* r, std::uint32_t base, std::uint32_t offset, std::uint32_t len) {
    auto e = expr("payload");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_BASE, base);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_OFFSET, offset);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_LEN, len);
    add(r, std::move(e));
}

// `meta nfproto ipv4|ipv6`: one byte, as nft builds it.
void match_nfproto(nftnl_rule* r, family f) {
    meta_load(r, NFT_META_NFPROTO);
    const std::uint8_t proto = f == family::ipv4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
    cmp(r, NFT_CMP_EQ, &proto, 1);
}

void match_l4proto(nftnl_rule* r, std::uint8_t proto) {
    meta_load(r, NFT_META_L4PROTO);
    cmp(r, NFT_CMP_EQ, &proto, 1);
}

// Loads the source address into reg 1 (after the nfproto match).
void load_saddr(nftnl_rule* r, family f) {
    if (f == family::ipv4) {
        payload(r, NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
    } else {
        payload(r, NFT_PAYLOAD_NETWORK_HEADER, 8, 16);
    }
}

std::uint64_t unit_seconds(rate_unit u) {
    switch (u) {
    case rate_unit::second:
        return 1;
    case rate_unit::minute:
        return 60;
    case rate_unit::hour:
        return 3600;
    }
    return 1;
}

expr_ptr limit_expr(const limit& l) {
    auto e = expr("limit");
    nftnl_expr_set_u64(e.get(), NFTNL_EXPR_LIMIT_RATE, l.rate);
    nftnl_expr_set_u64(e.get(), NFTNL_EXPR_LIMIT_UNIT, unit_seconds(l.unit));
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LIMIT_BURST, static_cast<std::uint32_t>(l.burst));
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LIMIT_TYPE, NFT_LIMIT_PKTS);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LIMIT_FLAGS, l.over ? NFT_LIMIT_F_INV : 0);
    return e;
}

using set_ids = std::map<std::string, std::uint32_t>;

std::uint32_t id_of(const set_ids& ids, const std::string& name) {
    const auto it = ids.find(name);
    if (it == ids.end()) {
        throw std::logic_error("rule refers to set " + name + " that the plan does not define");
    }
    return it->second;
}

// The expressions of one rule, in nft's own order (see model.hpp): checked against
// `nft -c --debug=netlink` output by the unit tests.
void build_rule_exprs(nftnl_rule* r, const rule& m, const set_ids& ids) {
    if (m.ct_state != 0) {
        auto e = expr("ct");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_KEY, NFT_CT_STATE);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_DREG, NFT_REG_1);
        add(r, std::move(e));
        auto b = expr("bitwise");
        const std::uint32_t mask = m.ct_state;
        const std::uint32_t zero = 0;
        nftnl_expr_set_u32(b.get(), NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
        nftnl_expr_set_u32(b.get(), NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
        nftnl_expr_set_u32(b.get(), NFTNL_EXPR_BITWISE_LEN, 4);
        nftnl_expr_set(b.get(), NFTNL_EXPR_BITWISE_MASK, &mask, 4);
        nftnl_expr_set(b.get(), NFTNL_EXPR_BITWISE_XOR, &zero, 4);
        add(r, std::move(b));
        cmp(r, NFT_CMP_NEQ, &zero, 4);
    }
    if (m.iif_loopback) {
        meta_load(r, NFT_META_IIF);
        const std::uint32_t lo = 1; // host order; lo is ifindex 1 in every namespace
        cmp(r, NFT_CMP_EQ, &lo, 4);
    }
    if (m.source) {
        match_nfproto(r, m.source->fam);
        load_saddr(r, m.source->fam);
        auto e = expr("lookup");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_LOOKUP_SET, m.source->set.c_str());
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SET_ID, id_of(ids, m.source->set));
        // Spelled out where the kernel's dump spells them out, so diff compares like with like.
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_FLAGS, 0);
        add(r, std::move(e));
    }
    if (m.l4proto) {
        match_l4proto(r, *m.l4proto);
        if (m.dport) {
            payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
            const std::uint16_t port = htons(*m.dport); // payload compares are network order
            cmp(r, NFT_CMP_EQ, &port, 2);
        }
    }
    if (m.icmp) {
        match_nfproto(r, m.icmp->fam);
        match_l4proto(r, m.icmp->fam == family::ipv4 ? proto_icmp : proto_icmpv6);
        payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1);
        cmp(r, NFT_CMP_EQ, &m.icmp->type, 1);
    }
    if (m.hoplimit) {
        payload(r, NFT_PAYLOAD_NETWORK_HEADER, 7, 1);
        cmp(r, NFT_CMP_EQ, &*m.hoplimit, 1);
    }
    if (m.per_source) {
        match_nfproto(r, m.per_source->fam);
        load_saddr(r, m.per_source->fam);
        auto e = expr("dynset");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_DYNSET_OP, NFT_DYNSET_OP_UPDATE);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_DYNSET_SREG_KEY, NFT_REG_1);
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_DYNSET_SET_NAME, m.per_source->set.c_str());
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_DYNSET_SET_ID, id_of(ids, m.per_source->set));
        nftnl_expr_set_u64(e.get(), NFTNL_EXPR_DYNSET_TIMEOUT, 0); // 0 = the set's own timeout
        // The dynset takes ownership of the nested expression.
        nftnl_expr_set(e.get(), NFTNL_EXPR_DYNSET_EXPR, limit_expr(m.per_source->per_source).release(), 0);
        add(r, std::move(e));
    }
    if (m.rate_limit) {
        add(r, limit_expr(*m.rate_limit));
    }
    add(r, expr("counter"));
    if (m.log_prefix) {
        auto e = expr("log");
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_LOG_PREFIX, m.log_prefix->c_str());
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOG_LEVEL, 4); // warning, nft's and the kernel's default
        add(r, std::move(e));
    }
    if (m.action != verdict::none) {
        auto e = expr("immediate");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, m.action == verdict::accept ? NF_ACCEPT : NF_DROP);
        add(r, std::move(e));
    }
}

rule_ptr make_rule(const std::string& chain_name) {
    rule_ptr r(checked(nftnl_rule_alloc()));
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table_name);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain_name.c_str());
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    return r;
}

void set_comment(nftnl_rule* r, const std::string& comment) {
    if (comment.empty()) {
        return;
    }
    udata_ptr u(checked(nftnl_udata_buf_alloc(udata_max)));
    if (!nftnl_udata_put_strz(u.get(), udata_rule_comment, comment.substr(0, udata_max - 8).c_str())) {
        throw std::length_error("rule comment too long: " + comment);
    }
    nftnl_rule_set_data(r, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(u.get()), nftnl_udata_buf_len(u.get()));
}

set_ptr make_set(const std::string& name) {
    set_ptr s(checked(nftnl_set_alloc()));
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, table_name);
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name.c_str());
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    return s;
}

void add_element(nftnl_set* s, const void* key, std::uint32_t len, std::uint32_t flags, std::uint64_t timeout_ms) {
    nftnl_set_elem* e = checked(nftnl_set_elem_alloc());
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, len);
    if (flags != 0) {
        nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, flags);
    }
    if (timeout_ms != 0) {
        nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, timeout_ms);
    }
    nftnl_set_elem_add(s, e);
}

// Adds one key +1 (big-endian increment); false on overflow (the range reaches
// the top of the address space and has no end element).
bool increment(std::array<std::uint8_t, 16>& bytes, unsigned size) {
    for (unsigned i = size; i-- > 0;) {
        if (++bytes[i] != 0) {
            return true;
        }
    }
    return false;
}

// Interval elements as nft 1.0.6 sends them: an end marker at 0 unless the first
// range starts there, then per network a start at its first address and an end
// at one past its last (none when that wraps).
void add_interval_elements(nftnl_set* s, const std::vector<prefix>& elements) {
    if (elements.empty()) {
        return;
    }
    const unsigned len = elements.front().size();
    const std::array<std::uint8_t, 16> zero{};
    if (!std::equal(zero.begin(), zero.begin() + len, elements.front().bytes.begin())) {
        add_element(s, zero.data(), len, NFT_SET_ELEM_INTERVAL_END, 0);
    }
    for (const auto& p : elements) {
        add_element(s, p.bytes.data(), len, 0, 0);
        auto end = p.last().bytes;
        if (increment(end, len)) {
            add_element(s, end.data(), len, NFT_SET_ELEM_INTERVAL_END, 0);
        }
    }
}

// Writes NEWSETELEM/DELSETELEM messages for every element of `s`, each under 64 KiB.
void put_elements(writer& w, nftnl_set* s, std::uint16_t type, std::uint16_t flags, const std::string& what) {
    elems_iter_ptr it(checked(nftnl_set_elems_iter_create(s)));
    for (int part = 1;; ++part) {
        nlmsghdr* nlh = w.start(type, flags, what + (part > 1 ? " (part " + std::to_string(part) + ")" : ""));
        const int more = nftnl_set_elems_nlmsg_build_payload_iter(nlh, it.get());
        w.finish();
        if (more <= 0) {
            return;
        }
    }
}

// ---- canonical rendering ---------------------------------------------------------

std::string get_str(const char* s) {
    return s == nullptr ? std::string() : std::string(s);
}

std::string comment_of(const nftnl_rule* r) {
    if (!nftnl_rule_is_set(r, NFTNL_RULE_USERDATA)) {
        return {};
    }
    std::uint32_t len = 0;
    const auto* data = static_cast<const std::uint8_t*>(nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &len));
    // TLV walk by hand: type (1 byte), length (1 byte), value.
    for (std::uint32_t off = 0; data != nullptr && off + 2 <= len;) {
        const std::uint8_t type = data[off];
        const std::uint8_t vlen = data[off + 1];
        if (off + 2 + vlen > len) {
            break;
        }
        if (type == udata_rule_comment && vlen > 0) {
            return std::string(reinterpret_cast<const char*>(data + off + 2),
                               strnlen(reinterpret_cast<const char*>(data + off + 2), vlen));
        }
        off += 2 + vlen;
    }
    return {};
}

struct rule_view {
    std::string text;
    std::uint64_t packets = 0;
    std::uint64_t bytes = 0;
};

// libnftnl's own printer per expression, counters read and then zeroed so
// that two rules differing only in traffic render the same.
rule_view render_exprs(nftnl_rule* r) {
    rule_view out;
    expr_iter_ptr it(checked(nftnl_expr_iter_create(r)));
    char buf[1024];
    for (nftnl_expr* e = nftnl_expr_iter_next(it.get()); e != nullptr; e = nftnl_expr_iter_next(it.get())) {
        if (get_str(nftnl_expr_get_str(e, NFTNL_EXPR_NAME)) == "counter") {
            out.packets += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
            out.bytes += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
            nftnl_expr_set_u64(e, NFTNL_EXPR_CTR_PACKETS, 0);
            nftnl_expr_set_u64(e, NFTNL_EXPR_CTR_BYTES, 0);
        }
        nftnl_expr_snprintf(buf, sizeof buf, e, NFTNL_OUTPUT_DEFAULT, 0);
        out.text += (out.text.empty() ? "[ " : " [ ") + get_str(nftnl_expr_get_str(e, NFTNL_EXPR_NAME)) + " " +
                    std::string(buf) + "]";
    }
    return out;
}

std::string render_rule_line(const std::string& chain, const std::string& text, const std::string& comment) {
    return "rule " + chain + ": " + text + (comment.empty() ? "" : " comment \"" + comment + "\"");
}

std::string render_chain(const nftnl_chain* c) {
    std::string out = "chain " + get_str(nftnl_chain_get_str(c, NFTNL_CHAIN_NAME));
    if (nftnl_chain_is_set(c, NFTNL_CHAIN_HOOKNUM)) {
        out += " type " + get_str(nftnl_chain_get_str(c, NFTNL_CHAIN_TYPE)) + " hook " +
               std::to_string(nftnl_chain_get_u32(c, NFTNL_CHAIN_HOOKNUM)) + " priority " +
               std::to_string(nftnl_chain_get_s32(c, NFTNL_CHAIN_PRIO));
    }
    if (nftnl_chain_is_set(c, NFTNL_CHAIN_POLICY)) {
        out += nftnl_chain_get_u32(c, NFTNL_CHAIN_POLICY) == NF_ACCEPT ? " policy accept" : " policy drop";
    }
    return out;
}

std::string render_set(const nftnl_set* s) {
    const auto u32 = [&](std::uint16_t attr) {
        return nftnl_set_is_set(s, attr) ? std::to_string(nftnl_set_get_u32(s, attr)) : std::string("-");
    };
    const auto u64 = [&](std::uint16_t attr) {
        return nftnl_set_is_set(s, attr) ? std::to_string(nftnl_set_get_u64(s, attr)) : std::string("0");
    };
    return "set " + get_str(nftnl_set_get_str(s, NFTNL_SET_NAME)) + " key_type " + u32(NFTNL_SET_KEY_TYPE) +
           " key_len " + u32(NFTNL_SET_KEY_LEN) + " flags " +
           (nftnl_set_is_set(s, NFTNL_SET_FLAGS) ? u32(NFTNL_SET_FLAGS) : std::string("0")) + " timeout " +
           u64(NFTNL_SET_TIMEOUT) + " size " +
           (nftnl_set_is_set(s, NFTNL_SET_DESC_SIZE) ? std::to_string(nftnl_set_get_u32(s, NFTNL_SET_DESC_SIZE))
                                                     : std::string("0"));
}

// Elements of sets whose content is policy; elements of timeout and dynamic sets
// (the blocklist, the meters) are run-time state and never compared.
bool content_is_policy(std::uint32_t set_flags) {
    return (set_flags & (NFT_SET_TIMEOUT | NFT_SET_EVAL)) == 0;
}

// The elements of a dumped set with their remaining lifetime (the kernel's
// expiration, in ms), for carrying a blocklist across a re-apply.
void collect_timed(nftnl_set* s, std::vector<std::pair<prefix, std::uint64_t>>& out) {
    nftnl_set_elems_iter* it = nftnl_set_elems_iter_create(s);
    if (it == nullptr) {
        return;
    }
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it); e != nullptr; e = nftnl_set_elems_iter_next(it)) {
        std::uint32_t len = 0;
        const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len);
        if (key == nullptr || (len != 4 && len != 16)) {
            continue;
        }
        prefix p;
        p.fam = len == 4 ? family::ipv4 : family::ipv6;
        p.length = len * 8;
        std::memcpy(p.bytes.data(), key, len);
        std::uint64_t remaining = 0;
        if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_EXPIRATION)) {
            // At least 1 ms: 0 would make a timed element permanent.
            remaining = std::max<std::uint64_t>(1, nftnl_set_elem_get_u64(e, NFTNL_SET_ELEM_EXPIRATION));
        }
        out.emplace_back(p, remaining);
    }
    nftnl_set_elems_iter_destroy(it);
}

void render_elements(const nftnl_set* s, const std::string& set_name, std::vector<std::string>& out,
                     std::size_t* count) {
    auto* iter = nftnl_set_elems_iter_create(s);
    if (iter == nullptr) {
        return;
    }
    elems_iter_ptr it(iter);
    std::vector<std::string> lines;
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it.get()); e != nullptr;
         e = nftnl_set_elems_iter_next(it.get())) {
        std::uint32_t len = 0;
        const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len);
        const std::uint32_t flags =
            nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS) ? nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS) : 0;
        if ((flags & NFT_SET_ELEM_INTERVAL_END) == 0 && count != nullptr) {
            ++*count;
        }
        // Addresses as addresses (diff prints these lines); anything else in hex.
        std::string shown;
        if (key != nullptr && (len == 4 || len == 16)) {
            prefix p;
            p.fam = len == 4 ? family::ipv4 : family::ipv6;
            p.length = len * 8;
            std::memcpy(p.bytes.data(), key, len);
            shown = p.to_string();
        } else {
            shown = hex(key, len);
        }
        lines.push_back("element " + set_name + " " + shown + ((flags & NFT_SET_ELEM_INTERVAL_END) != 0 ? " end" : ""));
    }
    out.insert(out.end(), lines.begin(), lines.end());
}

// libnftnl's element builder numbers the elements of a message 1, 2, 3... as
// their attribute types (the kernel ignores them), but its parser accepts only
// NFTA_LIST_ELEM (1). Renumbers a copy of the message so it parses back.
std::vector<char> renumber_elements(const nlmsghdr* nlh) {
    std::vector<char> copy(reinterpret_cast<const char*>(nlh), reinterpret_cast<const char*>(nlh) + nlh->nlmsg_len);
    char* p = copy.data() + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
    char* end = copy.data() + copy.size();
    while (p + sizeof(nlattr) <= end) {
        auto* a = reinterpret_cast<nlattr*>(p);
        if (a->nla_len < sizeof(nlattr) || p + a->nla_len > end) {
            break;
        }
        if ((a->nla_type & NLA_TYPE_MASK) == NFTA_SET_ELEM_LIST_ELEMENTS) {
            char* q = p + NLA_HDRLEN;
            char* nest_end = p + a->nla_len;
            while (q + sizeof(nlattr) <= nest_end) {
                auto* e = reinterpret_cast<nlattr*>(q);
                if (e->nla_len < sizeof(nlattr)) {
                    break;
                }
                e->nla_type = static_cast<std::uint16_t>((e->nla_type & ~NLA_TYPE_MASK) | NFTA_LIST_ELEM);
                q += NLA_ALIGN(e->nla_len);
            }
        }
        p += NLA_ALIGN(a->nla_len);
    }
    return copy;
}

// ---- netlink helpers -------------------------------------------------------------

// Walks the attributes of an extended ACK by hand (mnl_attr_for_each is C only).
std::string ext_ack_message(const nlmsghdr* nlh) {
    const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    if ((nlh->nlmsg_flags & NLM_F_ACK_TLVS) == 0) {
        return {};
    }
    std::size_t off = sizeof(nlmsgerr);
    if ((nlh->nlmsg_flags & NLM_F_CAPPED) == 0) {
        off += err->msg.nlmsg_len - sizeof(nlmsghdr);
    }
    const char* base = reinterpret_cast<const char*>(err);
    const char* end = reinterpret_cast<const char*>(nlh) + nlh->nlmsg_len;
    const char* p = base + MNL_ALIGN(off);
    while (p + sizeof(nlattr) <= end) {
        const auto* a = reinterpret_cast<const nlattr*>(p);
        if (a->nla_len < sizeof(nlattr) || p + a->nla_len > end) {
            break;
        }
        if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
            const char* msg = p + sizeof(nlattr);
            return std::string(msg, strnlen(msg, a->nla_len - sizeof(nlattr)));
        }
        p += MNL_ALIGN(a->nla_len);
    }
    return {};
}

} // namespace

// ---- batches ---------------------------------------------------------------------

batch replace_table(const ruleset& rs, std::uint32_t first_seq, bool reject_for_test) {
    writer w(first_seq);
    // NEWTABLE first so that DELTABLE never fails with ENOENT on a first apply.
    put_table(w, NFT_MSG_NEWTABLE, NLM_F_CREATE, "table inet rampart (ensure)");
    put_table(w, NFT_MSG_DELTABLE, 0, "table inet rampart (delete the old one)");
    put_table(w, NFT_MSG_NEWTABLE, NLM_F_CREATE, "table inet rampart");

    set_ids ids;
    std::uint32_t next_id = 1;
    for (const auto& s : rs.sets) {
        const std::uint32_t id = next_id++;
        ids.emplace(s.name, id);
        auto ns = make_set(s.name);
        nftnl_set_set_u32(ns.get(), NFTNL_SET_ID, id);
        nftnl_set_set_u32(ns.get(), NFTNL_SET_KEY_TYPE, key_type(s.fam));
        nftnl_set_set_u32(ns.get(), NFTNL_SET_KEY_LEN, key_len(s.fam));
        std::uint32_t flags = 0;
        flags |= s.interval ? NFT_SET_INTERVAL : 0;
        flags |= s.timeout ? NFT_SET_TIMEOUT : 0;
        flags |= s.dynamic ? NFT_SET_EVAL : 0;
        nftnl_set_set_u32(ns.get(), NFTNL_SET_FLAGS, flags);
        if (s.timeout_ms != 0) {
            nftnl_set_set_u64(ns.get(), NFTNL_SET_TIMEOUT, s.timeout_ms);
        }
        if (s.size != 0) {
            nftnl_set_set_u32(ns.get(), NFTNL_SET_DESC_SIZE, s.size);
        }
        nlmsghdr* nlh = w.start(NFT_MSG_NEWSET, NLM_F_CREATE, "set " + s.name);
        nftnl_set_nlmsg_build_payload(nlh, ns.get());
        w.finish();
        if (!s.elements.empty()) {
            auto es = make_set(s.name);
            nftnl_set_set_u32(es.get(), NFTNL_SET_ID, id);
            if (s.interval) {
                add_interval_elements(es.get(), s.elements);
            } else {
                for (const auto& e : s.elements) {
                    add_element(es.get(), e.bytes.data(), e.size(), 0, 0);
                }
            }
            put_elements(w, es.get(), NFT_MSG_NEWSETELEM, NLM_F_CREATE, "elements of set " + s.name);
        }
        if (!s.carried.empty()) {
            // In the same batch: a re-apply never opens a window in which a
            // blocked source gets through.
            auto es = make_set(s.name);
            nftnl_set_set_u32(es.get(), NFTNL_SET_ID, id);
            for (const auto& [e, remaining_ms] : s.carried) {
                add_element(es.get(), e.bytes.data(), e.size(), 0, remaining_ms);
            }
            put_elements(w, es.get(), NFT_MSG_NEWSETELEM, NLM_F_CREATE, "carried elements of set " + s.name);
        }
    }
    for (const auto& c : rs.chains) {
        chain_ptr nc(checked(nftnl_chain_alloc()));
        nftnl_chain_set_str(nc.get(), NFTNL_CHAIN_TABLE, table_name);
        nftnl_chain_set_str(nc.get(), NFTNL_CHAIN_NAME, c.name.c_str());
        nftnl_chain_set_u32(nc.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
        nftnl_chain_set_str(nc.get(), NFTNL_CHAIN_TYPE, "filter");
        nftnl_chain_set_u32(nc.get(), NFTNL_CHAIN_HOOKNUM,
                            c.at == hook::prerouting ? NF_INET_PRE_ROUTING : NF_INET_LOCAL_IN);
        nftnl_chain_set_s32(nc.get(), NFTNL_CHAIN_PRIO, c.priority);
        nftnl_chain_set_u32(nc.get(), NFTNL_CHAIN_POLICY, c.policy == verdict::drop ? NF_DROP : NF_ACCEPT);
        nlmsghdr* nlh = w.start(NFT_MSG_NEWCHAIN, NLM_F_CREATE, "chain " + c.name);
        nftnl_chain_nlmsg_build_payload(nlh, nc.get());
        w.finish();
    }
    for (const auto& c : rs.chains) {
        for (std::size_t i = 0; i < c.rules.size(); ++i) {
            const rule& m = c.rules[i];
            auto r = make_rule(c.name);
            build_rule_exprs(r.get(), m, ids);
            set_comment(r.get(), m.comment);
            nlmsghdr* nlh = w.start(NFT_MSG_NEWRULE, NLM_F_APPEND | NLM_F_CREATE,
                                    "rule " + std::to_string(i + 1) + " of chain " + c.name + " (" + m.comment +
                                        "): " + render_rule(m));
            nftnl_rule_nlmsg_build_payload(nlh, r.get());
            w.finish();
        }
    }
    if (reject_for_test) {
        // Test hook (RAMPART_FIREWALL_TEST_REJECT=1): a jump to a chain that does
        // not exist; the kernel refuses it and with it the whole transaction.
        auto r = make_rule("input");
        auto e = expr("immediate");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, NFT_JUMP);
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_IMM_CHAIN, "rampart-test-reject-no-such-chain");
        add(r.get(), std::move(e));
        nlmsghdr* nlh = w.start(NFT_MSG_NEWRULE, NLM_F_APPEND | NLM_F_CREATE,
                                "test hook rule (RAMPART_FIREWALL_TEST_REJECT): jump to a missing chain");
        nftnl_rule_nlmsg_build_payload(nlh, r.get());
        w.finish();
    }
    return w.done();
}

batch delete_table(std::uint32_t first_seq) {
    writer w(first_seq);
    put_table(w, NFT_MSG_NEWTABLE, NLM_F_CREATE, "table inet rampart (ensure)");
    put_table(w, NFT_MSG_DELTABLE, 0, "table inet rampart (delete)");
    return w.done();
}

batch set_elements(const std::vector<element_group>& groups, std::uint64_t timeout_ms, element_op op,
                   std::uint32_t first_seq) {
    writer w(first_seq);
    for (const auto& g : groups) {
        if (g.elements.empty()) {
            continue;
        }
        auto s = make_set(g.set_name);
        for (const auto& e : g.elements) {
            add_element(s.get(), e.bytes.data(), e.size(), 0, op == element_op::add ? timeout_ms : 0);
        }
        put_elements(w, s.get(), op == element_op::add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM,
                     op == element_op::add ? NLM_F_CREATE : 0,
                     std::string(op == element_op::add ? "add to " : "remove from ") + "set " + g.set_name);
    }
    return w.done();
}

std::vector<std::string> parse_batch(const batch& b) {
    std::vector<std::string> out;
    std::map<std::string, std::uint32_t> set_flags;
    const char* p = b.bytes.data();
    const char* end = p + b.bytes.size();
    while (p + sizeof(nlmsghdr) <= end) {
        const auto* nlh = reinterpret_cast<const nlmsghdr*>(p);
        if (nlh->nlmsg_len < sizeof(nlmsghdr) || p + nlh->nlmsg_len > end) {
            throw std::runtime_error("damaged batch: message length out of range");
        }
        p += NLMSG_ALIGN(nlh->nlmsg_len);
        const std::uint16_t type = nlh->nlmsg_type;
        if (type == NFNL_MSG_BATCH_BEGIN || type == NFNL_MSG_BATCH_END) {
            continue;
        }
        if ((type >> 8) != NFNL_SUBSYS_NFTABLES) {
            throw std::runtime_error("damaged batch: not an nftables message");
        }
        const int msg = type & 0xff;
        switch (msg) {
        case NFT_MSG_NEWTABLE:
        case NFT_MSG_DELTABLE: {
            table_ptr t(checked(nftnl_table_alloc()));
            if (nftnl_table_nlmsg_parse(nlh, t.get()) < 0) {
                throw std::runtime_error("table message does not parse");
            }
            out.push_back(std::string(msg == NFT_MSG_NEWTABLE ? "newtable " : "deltable ") +
                          get_str(nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME)));
            break;
        }
        case NFT_MSG_NEWSET: {
            set_ptr s(checked(nftnl_set_alloc()));
            if (nftnl_set_nlmsg_parse(nlh, s.get()) < 0) {
                throw std::runtime_error("set message does not parse");
            }
            set_flags[get_str(nftnl_set_get_str(s.get(), NFTNL_SET_NAME))] =
                nftnl_set_get_u32(s.get(), NFTNL_SET_FLAGS);
            out.push_back(render_set(s.get()));
            break;
        }
        case NFT_MSG_NEWSETELEM:
        case NFT_MSG_DELSETELEM: {
            set_ptr s(checked(nftnl_set_alloc()));
            const auto fixed = renumber_elements(nlh);
            if (nftnl_set_elems_nlmsg_parse(reinterpret_cast<const nlmsghdr*>(fixed.data()), s.get()) < 0) {
                throw std::runtime_error("set element message does not parse");
            }
            const std::string name = get_str(nftnl_set_get_str(s.get(), NFTNL_SET_NAME));
            std::vector<std::string> lines;
            render_elements(s.get(), name, lines, nullptr);
            for (auto& l : lines) {
                out.push_back(msg == NFT_MSG_DELSETELEM ? "del" + l : l);
            }
            break;
        }
        case NFT_MSG_NEWCHAIN: {
            chain_ptr c(checked(nftnl_chain_alloc()));
            if (nftnl_chain_nlmsg_parse(nlh, c.get()) < 0) {
                throw std::runtime_error("chain message does not parse");
            }
            out.push_back(render_chain(c.get()));
            break;
        }
        case NFT_MSG_NEWRULE: {
            rule_ptr r(checked(nftnl_rule_alloc()));
            if (nftnl_rule_nlmsg_parse(nlh, r.get()) < 0) {
                throw std::runtime_error("rule message does not parse");
            }
            const auto view = render_exprs(r.get());
            out.push_back(render_rule_line(get_str(nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN)), view.text,
                                           comment_of(r.get())));
            break;
        }
        default:
            throw std::runtime_error("unexpected nftables message " + std::to_string(msg));
        }
    }
    return out;
}

std::vector<std::string> canonical(const ruleset& rs) {
    std::vector<std::string> lines = parse_batch(replace_table(rs, 1));
    // Keep only what the kernel's dump shows: the table messages are the replace
    // idiom, and the blocklist's and meters' elements are run-time state.
    std::set<std::string> skip_sets;
    for (const auto& s : rs.sets) {
        if (s.timeout || s.dynamic) {
            skip_sets.insert(s.name);
        }
    }
    std::vector<std::string> out;
    for (auto& l : lines) {
        if (l.starts_with("newtable ") || l.starts_with("deltable ")) {
            continue;
        }
        if (l.starts_with("element ")) {
            const auto name = l.substr(8, l.find(' ', 8) - 8);
            if (skip_sets.contains(name)) {
                continue;
            }
        }
        out.push_back(std::move(l));
    }
    return out;
}

// ---- session -----------------------------------------------------------------------

struct session::impl {
    mnl_ptr nl;
    std::uint32_t portid = 0;
};

session::session() : impl_(std::make_unique<impl>()), seq_(static_cast<std::uint32_t>(std::time(nullptr))) {
    impl_->nl.reset(mnl_socket_open(NETLINK_NETFILTER));
    if (!impl_->nl) {
        throw std::runtime_error(std::string("cannot open a netfilter netlink socket: ") + std::strerror(errno));
    }
    if (mnl_socket_bind(impl_->nl.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
        throw std::runtime_error(std::string("cannot bind the netlink socket: ") + std::strerror(errno));
    }
    impl_->portid = mnl_socket_get_portid(impl_->nl.get());
    // Errors name the failing message's sequence number and say what is wrong.
    int on = 1;
    mnl_socket_setsockopt(impl_->nl.get(), NETLINK_EXT_ACK, &on, sizeof on);
    mnl_socket_setsockopt(impl_->nl.get(), NETLINK_CAP_ACK, &on, sizeof on);
}

session::~session() = default;

namespace {

// Sends one request and runs `cb` on every reply until the kernel is done.
void request(mnl_socket* nl, std::uint32_t portid, const nlmsghdr* nlh, std::uint32_t seq,
             const std::function<void(const nlmsghdr*)>& on_message) {
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
        throw std::system_error(errno, std::generic_category(), "netlink send");
    }
    std::vector<char> buf(1 << 17);
    struct context {
        const std::function<void(const nlmsghdr*)>* fn;
    } ctx{&on_message};
    const auto cb = [](const nlmsghdr* m, void* data) -> int {
        (*static_cast<context*>(data)->fn)(m);
        return MNL_CB_OK;
    };
    for (;;) {
        const ssize_t n = mnl_socket_recvfrom(nl, buf.data(), buf.size());
        if (n < 0) {
            throw std::system_error(errno, std::generic_category(), "netlink receive");
        }
        const int ret = mnl_cb_run(buf.data(), static_cast<std::size_t>(n), seq, portid, cb, &ctx);
        if (ret < 0) {
            throw std::system_error(errno, std::generic_category());
        }
        if (ret == MNL_CB_STOP) {
            return;
        }
        // A non-dump request is answered by one message (and maybe an ACK).
        if ((nlh->nlmsg_flags & NLM_F_DUMP) != NLM_F_DUMP) {
            return;
        }
    }
}

} // namespace

std::uint32_t session::generation() {
    char buf[8192];
    const std::uint32_t seq = seq_++;
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETGEN, AF_UNSPEC, 0, seq);
    std::optional<std::uint32_t> id;
    request(impl_->nl.get(), impl_->portid, nlh, seq, [&](const nlmsghdr* m) {
        gen_ptr g(checked(nftnl_gen_alloc()));
        if (nftnl_gen_nlmsg_parse(m, g.get()) >= 0) {
            id = nftnl_gen_get_u32(g.get(), NFTNL_GEN_ID);
        }
    });
    if (!id) {
        throw std::runtime_error("the kernel did not report the ruleset generation");
    }
    return *id;
}

void session::commit(const batch& b) {
    mnl_socket* nl = impl_->nl.get();
    const int fd = mnl_socket_get_fd(nl);
    // A replace of a large ruleset (or 100,000 blocklist elements) is megabytes;
    // the default send buffer refuses it with EMSGSIZE. FORCE needs CAP_NET_ADMIN,
    // which every caller of commit() has.
    const int size = static_cast<int>(std::min<std::size_t>(b.bytes.size() + 65536, 1U << 30));
    if (b.bytes.size() > 64 * 1024) {
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0) {
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        }
    }
    const int rcv = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) != 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    }
    // The batch numbers its messages from `next_seq()` on; skip past them.
    if (!b.what.empty()) {
        seq_ = std::max(seq_, b.what.rbegin()->first + 2);
    }
    const std::uint32_t before = generation();
    if (mnl_socket_sendto(nl, b.bytes.data(), b.bytes.size()) < 0) {
        throw std::runtime_error(std::string("sending the batch failed: ") + std::strerror(errno));
    }
    // The kernel has processed the whole batch inside sendmsg(): every error is
    // queued already. Without NLM_F_ACK only failures are answered.
    std::string failure;
    std::vector<char> buf(1 << 17);
    for (;;) {
        const ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            throw std::runtime_error(std::string("reading the kernel's answer failed: ") + std::strerror(errno));
        }
        std::size_t len = static_cast<std::size_t>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, static_cast<int>(len));
             nlh = mnl_nlmsg_next(nlh, reinterpret_cast<int*>(&len))) {
            if (nlh->nlmsg_type != NLMSG_ERROR) {
                continue;
            }
            const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
            if (err->error == 0 || !failure.empty()) {
                continue;
            }
            const auto it = b.what.find(err->msg.nlmsg_seq);
            const std::string ext = ext_ack_message(nlh);
            failure = std::string(std::strerror(-err->error)) + (ext.empty() ? "" : " (" + ext + ")") + " in " +
                      (it != b.what.end() ? it->second : "message " + std::to_string(err->msg.nlmsg_seq));
        }
    }
    const std::uint32_t after = generation();
    if (!failure.empty()) {
        throw std::runtime_error("the kernel refused the batch, nothing changed: " + failure);
    }
    if (after == before) {
        throw std::runtime_error("the kernel did not commit the batch (ruleset generation unchanged)");
    }
}

std::vector<std::pair<prefix, std::uint64_t>> session::timed_elements(const std::string& set_name) {
    std::vector<std::pair<prefix, std::uint64_t>> out;
    char buf[8192];
    const std::uint32_t seq = seq_++;
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, seq);
    auto s = make_set(set_name);
    nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
    try {
        request(impl_->nl.get(), impl_->portid, nlh, seq, [&](const nlmsghdr* m) {
            set_ptr part(checked(nftnl_set_alloc()));
            if (nftnl_set_elems_nlmsg_parse(m, part.get()) >= 0) {
                collect_timed(part.get(), out);
            }
        });
    } catch (const std::system_error& e) {
        if (e.code().value() != ENOENT) { // no table or no such set: nothing to carry
            throw;
        }
    }
    return out;
}

kernel_table session::dump() {
    kernel_table out;
    char buf[8192];
    mnl_socket* nl = impl_->nl.get();

    // Does the table exist? GETTABLE by name answers ENOENT when not.
    {
        const std::uint32_t seq = seq_++;
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NFPROTO_INET, 0, seq);
        const auto t = make_table();
        nftnl_table_nlmsg_build_payload(nlh, t.get());
        try {
            request(nl, impl_->portid, nlh, seq, [&](const nlmsghdr*) { out.exists = true; });
        } catch (const std::system_error& e) {
            if (e.code().value() == ENOENT) {
                return out;
            }
            throw;
        }
        out.exists = true;
    }

    // Chains.
    {
        const std::uint32_t seq = seq_++;
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, NFPROTO_INET, NLM_F_DUMP, seq);
        std::vector<std::string> lines;
        request(nl, impl_->portid, nlh, seq, [&](const nlmsghdr* m) {
            chain_ptr c(checked(nftnl_chain_alloc()));
            if (nftnl_chain_nlmsg_parse(m, c.get()) >= 0 &&
                get_str(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE)) == table_name) {
                lines.push_back(render_chain(c.get()));
            }
        });
        out.canonical.insert(out.canonical.end(), lines.begin(), lines.end());
    }

    // Sets, then each set's elements.
    std::vector<std::pair<std::string, std::uint32_t>> sets;
    {
        const std::uint32_t seq = seq_++;
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSET, NFPROTO_INET, NLM_F_DUMP, seq);
        auto filter = make_set("");
        nftnl_set_unset(filter.get(), NFTNL_SET_NAME);
        nftnl_set_nlmsg_build_payload(nlh, filter.get());
        std::vector<std::string> lines;
        request(nl, impl_->portid, nlh, seq, [&](const nlmsghdr* m) {
            set_ptr s(checked(nftnl_set_alloc()));
            if (nftnl_set_nlmsg_parse(m, s.get()) >= 0 &&
                get_str(nftnl_set_get_str(s.get(), NFTNL_SET_TABLE)) == table_name) {
                const std::uint32_t flags = nftnl_set_get_u32(s.get(), NFTNL_SET_FLAGS);
                // Anonymous sets belong to a rule; the rule's lookup shows them.
                if ((flags & NFT_SET_ANONYMOUS) == 0) {
                    sets.emplace_back(get_str(nftnl_set_get_str(s.get(), NFTNL_SET_NAME)), flags);
                    lines.push_back(render_set(s.get()));
                }
            }
        });
        out.canonical.insert(out.canonical.end(), lines.begin(), lines.end());
    }
    for (const auto& [name, flags] : sets) {
        const std::uint32_t seq = seq_++;
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, seq);
        auto s = make_set(name);
        nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
        kernel_set ks{name, flags, 0};
        std::vector<std::string> lines;
        request(nl, impl_->portid, nlh, seq, [&](const nlmsghdr* m) {
            set_ptr part(checked(nftnl_set_alloc()));
            if (nftnl_set_elems_nlmsg_parse(m, part.get()) >= 0) {
                render_elements(part.get(), name, lines, &ks.elements);
            }
        });
        // The kernel dumps interval sets from the top down; order is not content.
        std::sort(lines.begin(), lines.end());
        if (content_is_policy(flags)) {
            out.canonical.insert(out.canonical.end(), lines.begin(), lines.end());
        }
        out.sets.push_back(std::move(ks));
    }

    // Rules, in chain order.
    {
        const std::uint32_t seq = seq_++;
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, seq);
        auto filter = make_rule("");
        nftnl_rule_unset(filter.get(), NFTNL_RULE_CHAIN);
        nftnl_rule_nlmsg_build_payload(nlh, filter.get());
        request(nl, impl_->portid, nlh, seq, [&](const nlmsghdr* m) {
            rule_ptr r(checked(nftnl_rule_alloc()));
            if (nftnl_rule_nlmsg_parse(m, r.get()) < 0 ||
                get_str(nftnl_rule_get_str(r.get(), NFTNL_RULE_TABLE)) != table_name) {
                return;
            }
            kernel_rule kr;
            kr.chain = get_str(nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN));
            kr.handle = nftnl_rule_get_u64(r.get(), NFTNL_RULE_HANDLE);
            kr.comment = comment_of(r.get());
            auto view = render_exprs(r.get());
            kr.text = std::move(view.text);
            kr.packets = view.packets;
            kr.bytes = view.bytes;
            out.canonical.push_back(render_rule_line(kr.chain, kr.text, kr.comment));
            out.rules.push_back(std::move(kr));
        });
    }
    return out;
}

} // namespace rampart::firewall::nft
