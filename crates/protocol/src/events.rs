//! The reserved system event names (PROTOCOL.md §3). Case-sensitive, underscore included.

/// Request to connect a namespace (travels on the wire); its handler may refuse.
pub const ON_NAMESPACE_CONNECT: &str = "_OnNamespaceConnect";
/// Fired locally after a namespace connect succeeded.
pub const ON_NAMESPACE_CONNECTED: &str = "_OnNamespaceConnected";
/// Request to disconnect a namespace (travels on the wire), and the local event.
pub const ON_NAMESPACE_DISCONNECT: &str = "_OnNamespaceDisconnect";
/// Request to join a room (travels on the wire); its handler may refuse.
pub const ON_ROOM_JOIN: &str = "_OnRoomJoin";
/// Fired locally after a room join succeeded.
pub const ON_ROOM_JOINED: &str = "_OnRoomJoined";
/// Request to leave a room (travels on the wire); its handler may refuse on the server.
pub const ON_ROOM_LEAVE: &str = "_OnRoomLeave";
/// Fired locally after a room leave.
pub const ON_ROOM_LEFT: &str = "_OnRoomLeft";
/// Fallback handler for events without their own handler.
pub const ON_ANY_EVENT: &str = "_OnAnyEvent";
/// Raw (native) WebSocket messages.
pub const ON_NATIVE_MESSAGE: &str = "_OnNativeMessage";

/// Every system event, in the order of PROTOCOL.md §3.
pub const ALL: [&str; 9] = [
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    ON_ANY_EVENT,
    ON_NATIVE_MESSAGE,
];

/// True for the reserved names in [`ALL`].
pub fn is_system_event(event: &str) -> bool {
    ALL.contains(&event)
}
