-- Herald on Prosody (0.12): merge these lines into /etc/prosody/prosody.cfg.lua.
--
-- Replace example.org with your domain and each "change-me" with the secret from
-- Herald's configuration (multicast.secret, pubsub.secret). Then run
--   prosodyctl check config && prosodyctl reload
--
-- Needs mod_privilege from prosody-modules (Debian: apt-get install prosody-modules;
-- elsewhere see https://modules.prosody.im/mod_privilege.html).

---------------------------------------------------------------------------------
-- Global section: put these above the first VirtualHost/Component line, or they
-- apply only to the host above them.
---------------------------------------------------------------------------------

-- Herald connects here (XEP-0114). Keep it on loopback: the secrets are the only
-- thing protecting the listener, and the stream is not encrypted.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

-- Stanzas to and from components are small and latency-sensitive. With Nagle's
-- algorithm on, Prosody batches them: pubsub event latency was ~40 ms instead of
-- ~1.3 ms in our measurements.
network_settings = { nagle = false }

---------------------------------------------------------------------------------
-- Your domain
---------------------------------------------------------------------------------
VirtualHost "example.org"
  -- Added to the global modules_enabled for this host: mod_privilege must run on
  -- the host that grants the privileges and on each component (see below).
  modules_enabled = { "privilege" }

  -- XEP-0356 privileged entities. These permissions cover every account of
  -- example.org: grant them only to components you run yourself.
  privileged_entities = {
    -- The pubsub proxy answers from its cache only what anyone may read. Everything
    -- else it forwards upstream *as the requesting user* (a privileged IQ), so that
    -- the user gets exactly what upstream would give them, never more.
    -- pubsub: reads and writes; pubsub#owner: configure, affiliations, delete...;
    -- disco#items: listing a non-open node's items.
    -- presence = "managed_entity": your users' presence, for presence-based delivery
    -- and pubsub#show-values on the subscriptions Herald holds (without it, Herald
    -- delivers to every subscriber and refuses show-values).
    ["pubsub.example.org"] = {
      presence = "managed_entity";
      iq = {
        ["http://jabber.org/protocol/pubsub"] = "both";
        ["http://jabber.org/protocol/pubsub#owner"] = "both";
        ["http://jabber.org/protocol/disco#items"] = "get";
      };
    };
    -- The multicast service sends copies as your users through ONE of two routes,
    -- never both: trusted mode (validate_from_addresses on its Component, below:
    -- the route shipped here, which multicast presence needs), or the XEP-0356
    -- message privilege (Herald's multicast.sender_mode = "privileged": Herald wraps
    -- each copy in a privileged message; <message/> only, the sender's bare JID).
    -- To switch to the privileged route, uncomment the message line AND delete the
    -- validate_from_addresses line below. With both, mod_privilege obeys a
    -- privilege envelope by the component's session, whatever its 'from': Herald
    -- refuses to carry envelopes, but a second open route is one mistake away, and
    -- Herald warns at start-up when it sees one.
    -- presence = "managed_entity" forwards users' initial and unavailable presence to
    -- the component; delivery does not depend on it.
    ["multicast.example.org"] = {
      presence = "managed_entity";
      -- message = "outgoing";
    };
  }

---------------------------------------------------------------------------------
-- Herald's two components, one stream each
---------------------------------------------------------------------------------
Component "multicast.example.org"
  component_secret = "change-me"
  modules_enabled = { "privilege" }
  -- Trusted mode (multicast.sender_mode = "trusted", or "auto" without privileges):
  -- Prosody stops checking the 'from' of what this component sends, so Herald may
  -- send stanzas 'from' ANY JID, e.g. a copy from alice@example.org to bob. That is
  -- what a multicast service must do, and what Prosody otherwise punishes by closing
  -- the whole stream (invalid-from). Only do this for a component you trust: whoever
  -- holds component_secret can then speak as any of your users, to anyone. It is
  -- one of two exclusive routes: to use the message privilege instead (see
  -- privileged_entities above), delete this line (multicast presence is then
  -- refused) and set sender_mode = "privileged".
  validate_from_addresses = false

Component "pubsub.example.org"
  component_secret = "change-me"
  modules_enabled = { "privilege" }

-- The service proxied at the bare proxy JID (Herald's pubsub.upstream). Skip this
-- if you point pubsub.upstream at an existing pubsub service. If your existing
-- service is already called pubsub.example.org, rename one of the two.
Component "pubsub-origin.example.org" "pubsub"
